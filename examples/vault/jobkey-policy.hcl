# jobkey's own Vault (or OpenBao) policy: what the broker needs, and nothing
# more. No `sudo` anywhere, no `auth/token/create-orphan`, no `auth/token/create`
# without a role, no `sys/policies`, no `sys/leases/lookup`.
#
#   bao policy write jobkey examples/vault/jobkey-policy.hcl
#
# One stanza per credential kind. The mounts are the engines' usual paths
# (what policy files use when they name no `mount`), plus `pki-k8s`, the
# kubeconfig mount of the shipped policies/production.yaml. Keep only the
# stanzas of the kinds your policy files use, rename the mounts to yours,
# and replace `+` (any one role) with the roles your policy files name.
# A policy file can then reach nothing this policy does not grant, whatever
# it says. The make test suite and `make demo` log jobkey in with exactly
# this file; docs/vault-policy.md explains each line.

# jobkey's own token: looked up at login and every few seconds (readiness),
# renewed at about 2/3 of its TTL. Listed here so the policy does not depend
# on Vault's `default` policy.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# kv: KV v2 reads. Narrow to the paths your policy files name.
path "secret/data/*" {
  capabilities = ["read"]
}

# database and rabbitmq: a new user per exchange.
path "database/creds/+" {
  capabilities = ["read"]
}
path "rabbitmq/creds/+" {
  capabilities = ["read"]
}

# certificate, and kubeconfig with a client certificate: issue, and revoke
# by serial number (so a revoked certificate is on the CRL).
path "pki/issue/+" {
  capabilities = ["update"]
}
path "pki/revoke" {
  capabilities = ["update"]
}
path "pki-k8s/issue/+" {
  capabilities = ["update"]
}
path "pki-k8s/revoke" {
  capabilities = ["update"]
}

# kubeconfig with a service account: a token from the kubernetes engine.
path "kubernetes/creds/+" {
  capabilities = ["update"]
}

# ssh_certificate: sign the job's public key.
path "ssh/sign/+" {
  capabilities = ["update"]
}

# vault_token: only through the token role `jobkey-job`, whose
# allowed_policies (the same list as `[vault] allowed_token_policies` in
# jobkey's config) cap what the token may carry, and which makes it an
# orphan without `sudo` (see jobkey-job-role.json). Revocation by accessor
# also revokes unused wrapping tokens.
path "auth/token/create/jobkey-job" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# Leases (database, rabbitmq, kubernetes): shortened to the job's TTL
# (renew with a smaller increment) and revoked.
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}

# wrap: true: response wrapping.
path "sys/wrapping/wrap" {
  capabilities = ["update"]
}
