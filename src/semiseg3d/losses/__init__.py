"""Loss terms of the method, one module per paper component, each a pure function."""
