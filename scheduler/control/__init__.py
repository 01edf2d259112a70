"""The live controller: reconcile the store with the backend, then run decide() in a loop."""
