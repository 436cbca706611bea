# What a CI job's own Vault token may do on the vault-action path (and the
# raw path's static token): read the bench secret. revoke-self comes from
# Vault's `default` policy, which both tokens also carry.
path "secret/data/bench/app" {
  capabilities = ["read"]
}
