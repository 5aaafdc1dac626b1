"""cropq HTTP API: the native v1 face and the IMM RPC face over one job path."""
