//! Client certificates (mTLS): verified against `client_ca`, and each route's
//! `allowed_identities` matched by type (`uri:`, `dns:`, `email:`, `ip:`, `CN=`): a name of one
//! type never stands in for another.

use std::path::PathBuf;

use rcgen::SanType;
use serde_json::{json, Value};

use super::{handshake, start, Client, Conn, Tls};
use crate::support::certs::TestCa;

/// Writes a certificate and key issued for a test into its directory; returns their paths.
fn write_pair(t: &Tls, name: &str, (cert, key): (String, String)) -> (PathBuf, PathBuf) {
    let c = t.dir.path().join(format!("{name}.crt"));
    let k = t.dir.path().join(format!("{name}.key"));
    std::fs::write(&c, cert).expect("write");
    std::fs::write(&k, key).expect("write");
    (c, k)
}

/// A kept-alive connection presenting the client certificate `pair` (cert, key).
async fn connect_as(t: &Tls, pair: &(PathBuf, PathBuf)) -> Conn {
    let client = Client {
        cert: Some((pair.0.as_path(), pair.1.as_path())),
        ..Client::default()
    };
    Conn::open(handshake(t, client).await.expect("handshake"))
        .await
        .expect("http")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_identities_allowed_per_route() {
    let _turn = crate::support::lock::shared().await;
    // `start` writes the client CA into its directory.
    let t = start(|dir| json!({ "client_ca": dir.join("client-ca.pem") })).await;
    let app_a = write_pair(&t, "app-a", t.client_ca.issue(&["app-a.internal"]));
    let app_b = write_pair(&t, "app-b", t.client_ca.issue(&["app-b.internal"]));
    let stranger = write_pair(&t, "stranger", TestCa::new().issue(&["app-a.internal"]));

    let request_without_cert = async {
        let stream = handshake(&t, Client::default()).await.ok()?;
        Conn::open(stream).await.ok()?.post("/open/x").await.ok()
    };
    assert_eq!(
        request_without_cert.await,
        None,
        "no client certificate: refused"
    );
    let request_from_stranger = async {
        let stream = handshake(
            &t,
            Client {
                cert: Some((&stranger.0, &stranger.1)),
                ..Client::default()
            },
        )
        .await
        .ok()?;
        Conn::open(stream).await.ok()?.post("/open/x").await.ok()
    };
    assert_eq!(
        request_from_stranger.await,
        None,
        "certificate from another CA: refused"
    );

    assert_eq!(
        connect_as(&t, &app_a).await.post("/narrow/x").await,
        Ok(200),
        "allowed identity"
    );
    assert_eq!(
        connect_as(&t, &app_b).await.post("/open/x").await,
        Ok(200),
        "any verified client on an open route"
    );
    assert_eq!(
        connect_as(&t, &app_b).await.post("/narrow/x").await,
        Ok(403),
        "identity not on the route's list"
    );
}

/// An IA5 string for rcgen's SAN types.
fn ia5(text: &str) -> rcgen::Ia5String {
    text.try_into().expect("IA5 text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_matches_only_a_san_of_its_own_type() {
    let _turn = crate::support::lock::shared().await;
    // The `alice` route allows `uri:spiffe://x/alice` only.
    let t = start(|dir| json!({ "client_ca": dir.join("client-ca.pem") })).await;
    let uri = |s: &str| SanType::URI(ia5(s));
    let dns = |s: &str| SanType::DnsName(ia5(s));
    let lookalikes = [
        // The same text in a SAN of another type (the CA vouched for a DNS name or an email
        // address, not for a SPIFFE ID).
        ("dns-san", "dns-lookalike", vec![dns("spiffe://x/alice")]),
        (
            "email-san",
            "email-lookalike",
            vec![SanType::Rfc822Name(ia5("spiffe://x/alice"))],
        ),
        // The allow-list entry itself, typed prefix included, as a DNS SAN.
        (
            "dns-san-prefixed",
            "prefixed-lookalike",
            vec![dns("uri:spiffe://x/alice")],
        ),
        // The text as the subject common name.
        ("cn", "spiffe://x/alice", vec![dns("cn-lookalike.internal")]),
        // A URI that merely contains, or differs in case from, the allowed one.
        ("uri-longer", "longer", vec![uri("spiffe://x/alice/admin")]),
        ("uri-case", "case", vec![uri("SPIFFE://X/ALICE")]),
    ];
    for (name, cn, sans) in lookalikes {
        let pair = write_pair(&t, name, t.client_ca.issue_with_sans(cn, sans));
        let (status, body) = connect_as(&t, &pair)
            .await
            .post_reading("/alice/x")
            .await
            .expect("an answer");
        assert_eq!(status, 403, "{name}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(
            error["error"]["code"], "client_identity_not_allowed",
            "{name}: {body}"
        );
    }
    assert!(
        t.mock.requests().is_empty(),
        "a refused client reached the provider"
    );

    let alice = write_pair(
        &t,
        "alice",
        t.client_ca
            .issue_with_sans("alice", vec![uri("spiffe://x/alice")]),
    );
    assert_eq!(
        connect_as(&t, &alice).await.post("/alice/x").await,
        Ok(200),
        "the URI SAN the route allows"
    );
    assert_eq!(t.mock.requests().len(), 1);
}
