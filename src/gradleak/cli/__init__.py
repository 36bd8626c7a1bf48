"""Command-line interface: ``gradleak run|text|…`` and the classic ``python main.py`` shim."""
