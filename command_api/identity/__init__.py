"""Registration, login, refresh-token rotation and logout."""
