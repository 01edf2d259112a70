"""Shared pytest setup. Its presence (with tests/__init__.py) puts the repository root on sys.path,
so test modules anywhere under tests/ can `from tests.builders import ...` however pytest is started."""
