"""One module per channel type; alerts/factory.py builds them from the config."""
