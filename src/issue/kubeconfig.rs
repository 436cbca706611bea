//! Composing a complete kubeconfig from the policy's cluster and an issued
//! user credential. Every string is written as a JSON-quoted scalar (valid
//! YAML), and the PEM material as base64 `*-data` fields, so no value can
//! change the document's structure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::policy::KubeCluster;
use crate::secret::SecretString;

const USER: &str = "jobkey";

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn compose(cluster: &KubeCluster, user_fields: &str) -> SecretString {
    let ns = cluster
        .namespace
        .as_deref()
        .map(|n| format!("    namespace: {}\n", q(n)))
        .unwrap_or_default();
    let doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n{user_fields}contexts:\n- name: {user}\n  context:\n    cluster: {name}\n    user: {user}\n{ns}current-context: {user}\n",
        name = q(&cluster.name),
        server = q(&cluster.server),
        ca = STANDARD.encode(cluster.certificate_authority.as_bytes()),
        user = q(USER),
    );
    SecretString::new(doc)
}

/// A kubeconfig whose user authenticates with a client certificate.
pub(crate) fn with_client_certificate(
    cluster: &KubeCluster,
    certificate_pem: &str,
    private_key_pem: &SecretString,
) -> SecretString {
    let key = Zeroizing::new(STANDARD.encode(private_key_pem.expose_secret().as_bytes()));
    let fields = Zeroizing::new(format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(certificate_pem.as_bytes()),
        key.as_str()
    ));
    compose(cluster, &fields)
}

/// A kubeconfig whose user authenticates with a bearer token.
pub(crate) fn with_token(cluster: &KubeCluster, token: &SecretString) -> SecretString {
    let fields = Zeroizing::new(format!("    token: {}\n", q(token.expose_secret())));
    compose(cluster, &fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> KubeCluster {
        KubeCluster {
            name: "prod".into(),
            server: "https://k8s.internal:6443".into(),
            certificate_authority: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                .into(),
            namespace: Some("apps".into()),
        }
    }

    #[test]
    fn token_kubeconfig_is_complete_and_quoted() {
        let kc = with_token(&cluster(), &SecretString::new("tok\"en\nx".into()));
        let text = kc.expose_secret();
        // It parses as YAML into the expected structure (serde-saphyr).
        let v: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://k8s.internal:6443"
        );
        assert_eq!(
            v["users"][0]["user"]["token"], "tok\"en\nx",
            "quoted, not injected"
        );
        assert_eq!(v["contexts"][0]["context"]["namespace"], "apps");
        assert_eq!(v["current-context"], "jobkey");
        let ca = STANDARD
            .decode(
                v["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert!(
            String::from_utf8(ca)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn client_certificate_kubeconfig_carries_cert_and_key() {
        let kc = with_client_certificate(
            &KubeCluster {
                namespace: None,
                ..cluster()
            },
            "CERT-PEM",
            &SecretString::new("KEY-PEM".into()),
        );
        let v: serde_json::Value = serde_saphyr::from_str(kc.expose_secret()).unwrap();
        let user = &v["users"][0]["user"];
        assert_eq!(
            STANDARD
                .decode(user["client-certificate-data"].as_str().unwrap())
                .unwrap(),
            b"CERT-PEM"
        );
        assert_eq!(
            STANDARD
                .decode(user["client-key-data"].as_str().unwrap())
                .unwrap(),
            b"KEY-PEM"
        );
        assert!(v["contexts"][0]["context"].get("namespace").is_none());
    }
}
