"""Who may call what: API keys created at run time, shared by every replica."""
