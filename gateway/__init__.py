"""shipyard's gateway: the only public door (auth, profiles, authorization, reverse proxy)."""
