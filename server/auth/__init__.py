"""Identity and access control: credentials, tokens, scopes, policies, limits."""
