//! The storage API as a guest sees it, through the `probe` test guest: every
//! operation, list options, limits and the per-object quota, on a real redb file.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

async fn list(host: &TestHost, query: &str) -> Vec<String> {
    let (status, body) = host
        .http("GET", &format!("/probe/kv/list?{query}"), b"")
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_storage_operation_behaves_like_durable_objects() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    for k in ["a", "b1", "b2", "b3", "c"] {
        assert_eq!(
            host.http("POST", &format!("/probe/kv/put?key={k}&value=v{k}"), b"")
                .await
                .0,
            200
        );
    }
    assert_eq!(
        host.http("GET", "/probe/kv/get?key=b2", b"").await,
        (200, "vb2".to_string())
    );
    assert_eq!(list(&host, "").await, ["a", "b1", "b2", "b3", "c"]);
    assert_eq!(list(&host, "prefix=b").await, ["b1", "b2", "b3"]);
    assert_eq!(
        list(&host, "prefix=b&reverse=true&limit=2").await,
        ["b3", "b2"]
    );
    assert_eq!(list(&host, "start=b2").await, ["b2", "b3", "c"]);
    assert_eq!(list(&host, "start-after=b2").await, ["b3", "c"]);
    assert_eq!(
        list(&host, "start=b1&end=b3").await,
        ["b1", "b2"],
        "end is exclusive"
    );
    assert_eq!(list(&host, "limit=0").await, Vec::<String>::new());
    // The whole row comes back with its value.
    let (_, body) = host.http("GET", "/probe/kv/list?prefix=c", b"").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([["c", "vc"]])
    );

    assert_eq!(
        host.http("POST", "/probe/kv/delete?key=b1", b"").await.1,
        "true"
    );
    assert_eq!(
        host.http("POST", "/probe/kv/delete?key=b1", b"").await.1,
        "false"
    );
    assert_eq!(host.http("GET", "/probe/kv/get?key=b1", b"").await.0, 404);
    // Another object never sees these keys.
    assert_eq!(host.http("GET", "/probe/other/list", b"").await.1, "[]");
    // The batch forms.
    assert_eq!(
        host.http("POST", "/probe/kv/put-many?keys=m1,m2,m3&values=1,2,3", b"")
            .await
            .0,
        200
    );
    let (_, body) = host
        .http("GET", "/probe/kv/get-many?keys=m3,nope,m1", b"")
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([["m1", "1"], ["m3", "3"]])
    );
    assert_eq!(
        host.http("POST", "/probe/kv/delete-many?keys=m1,m2,nope", b"")
            .await
            .1,
        "2"
    );
    assert_eq!(list(&host, "prefix=m").await, ["m3"]);
    assert_eq!(host.http("POST", "/probe/kv/delete-all", b"").await.0, 200);
    assert_eq!(list(&host, "").await, Vec::<String>::new());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_quota_is_a_typed_error_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.storage_quota_bytes = 1000;
    let host = start_host(config).await;
    let big = "x".repeat(600);
    assert_eq!(
        host.http("POST", "/probe/q/put?key=one", big.as_bytes())
            .await
            .0,
        200
    );
    let (status, body) = host
        .http("POST", "/probe/q/put?key=two", big.as_bytes())
        .await;
    assert_eq!(status, 500);
    assert!(body.contains("QuotaExceeded(1000)"), "{body}");
    // Other objects have their own quota; deleting frees space.
    assert_eq!(
        host.http("POST", "/probe/q2/put?key=two", big.as_bytes())
            .await
            .0,
        200
    );
    assert_eq!(
        host.http("POST", "/probe/q/delete?key=one", b"").await.1,
        "true"
    );
    assert_eq!(
        host.http("POST", "/probe/q/put?key=two", big.as_bytes())
            .await
            .0,
        200
    );
    host.stop().await;
}
