//! What signing a Bedrock request with AWS keys costs on the request path:
//! `AwsCredential::sign` over a rewritten request head and its body (the client's signature
//! headers removed, the canonical request built, the body hashed, the signature made with the
//! day's derived key, the three headers set), for a 1 KB and a 200 KB body. The key is derived
//! once per day, before the timed region; the body's SHA-256 is the part that grows with it.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pingora::http::RequestHeader;
use sidecar::aws::{from_fields, BEDROCK_SERVICE};
use sidecar::credentials::Secret;

fn request() -> RequestHeader {
    let path = b"/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    let mut req = RequestHeader::build("POST", path, None).expect("request");
    for (name, value) in [
        ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ] {
        req.insert_header(name, value).expect("header");
    }
    req
}

fn sign(c: &mut Criterion) {
    let fields = [
        ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
        (
            "aws_secret_access_key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("aws_session_token", &"FwoGZXIvYXdzE".repeat(60)),
        ("aws_region_name", "us-east-1"),
    ];
    let mut values: HashMap<String, Secret> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), Secret::new(v.to_string())))
        .collect();
    let aws = from_fields("bench", &mut values)
        .expect("valid")
        .expect("AWS keys");
    let mut req = request();
    let mut group = c.benchmark_group("sigv4_sign");
    for size in [1024usize, 200 * 1024] {
        let body = vec![b'x'; size];
        aws.sign("bench", &mut req, &body, BEDROCK_SERVICE)
            .expect("signed");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                aws.sign(
                    "bench",
                    black_box(&mut req),
                    black_box(body),
                    BEDROCK_SERVICE,
                )
                .expect("signed")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
