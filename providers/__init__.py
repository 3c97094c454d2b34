"""Payment providers: the port every adapter implements, and one sub-package per provider."""
