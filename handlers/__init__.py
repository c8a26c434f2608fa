"""The project's task handlers. Importing this package registers them."""
