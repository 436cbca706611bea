//! Token verification cost: the whole pipeline (`Verifier::verify_at`:
//! size cap, header checks, issuer lookup, cached key, signature, claims)
//! against ring's bare RSA verification of the same signature, measured in
//! one run so the ratio, not the absolute figure, is the claim.
//!
//! `cargo bench --bench verify -- --quick`

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jobkey::{DEFAULT_MAX_TOKEN_BYTES, FetchSettings, IssuerSettings, KeySource, Verifier};
use jobkey::{Shape, SigningKey};
use serde_json::Value;

fn bench(c: &mut Criterion) {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/issuer-a.pem"
    ))
    .unwrap();
    let key = SigningKey::rsa_from_pem(&pem, "k1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [key.public_jwk()]}).to_string(),
    )
    .unwrap();
    let iss = "https://token.actions.githubusercontent.com";
    let now = 1_800_000_000;
    let token = key.mint(&Value::Object(Shape::Github.claims(iss, "jobkey", now)));
    let verifier = Verifier::new(
        vec![IssuerSettings {
            name: "github".into(),
            issuer: iss.into(),
            provider: jobkey::Provider::Github,
            keys: KeySource::JwksFile(jwks),
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            leeway: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(900),
            ca_file: None,
        }],
        vec!["jobkey".into()],
        FetchSettings::default(),
        DEFAULT_MAX_TOKEN_BYTES,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(verifier.verify_at(&token, now))
        .expect("the token verifies");

    c.bench_function("verify: whole pipeline (RS256)", |b| {
        b.iter(|| {
            rt.block_on(verifier.verify_at(black_box(&token), now))
                .unwrap()
        })
    });

    // ring alone on the same signing input and signature.
    let jwk = key.public_jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    c.bench_function("verify: ring RSA signature only", |b| {
        b.iter(|| {
            public
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    black_box(input.as_bytes()),
                    &sig,
                )
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
