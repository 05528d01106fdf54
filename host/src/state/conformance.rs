//! What every backend must do with quotas, run against each of them by the tests (the Redis
//! one against a real server).

use std::time::Duration;

use super::kv::{COUNTER_BYTES, KvError, KvStore, Quota, Usage, entry_bytes, namespaced};

/// Per-tenant key and byte quotas: enforced, independent between tenants, given back by
/// deletes, shrinking values and expiry. Panics on a difference.
pub async fn tenant_quotas(kv: &dyn KvStore) {
    let quota = Quota { max_keys: 3, max_bytes: 400 };
    let a = |k: &str| namespaced("alpha", "p", k);
    let b = |k: &str| namespaced("beta", "p", k);

    kv.set(&a("1"), b"x".to_vec(), None, quota).await.expect("first key");
    kv.set(&a("2"), b"x".to_vec(), None, quota).await.expect("second key");
    assert_eq!(kv.incr(&a("3"), 1, None, quota).await, Ok(1));
    assert_eq!(kv.set(&a("4"), b"x".to_vec(), None, quota).await, Err(KvError::QuotaExceeded));
    assert_eq!(kv.incr(&a("4"), 1, None, quota).await, Err(KvError::QuotaExceeded));
    assert_eq!(kv.get(&a("4")).await, Ok(None));
    // Keys it has can still be written.
    assert_eq!(kv.incr(&a("3"), 1, None, quota).await, Ok(2));
    kv.set(&a("1"), b"yy".to_vec(), None, quota).await.expect("overwrite");
    // Another tenant is not affected.
    kv.set(&b("1"), b"x".to_vec(), None, quota).await.expect("other tenant");
    let expected = Usage {
        keys: 3,
        bytes: entry_bytes(&a("1"), 2) + entry_bytes(&a("2"), 1) + a("3").len() as u64 + COUNTER_BYTES,
    };
    assert_eq!(kv.usage("alpha").await, Ok(expected));
    assert_eq!(kv.usage("beta").await, Ok(Usage { keys: 1, bytes: entry_bytes(&b("1"), 1) }));

    // A delete gives the key back.
    kv.delete(&a("2")).await.expect("delete");
    kv.set(&a("4"), b"x".to_vec(), None, quota).await.expect("key freed by delete");

    // Bytes: growing past the quota fails and keeps the old value; shrinking works.
    assert_eq!(kv.set(&a("1"), vec![b'z'; 400], None, quota).await, Err(KvError::QuotaExceeded));
    assert_eq!(kv.get(&a("1")).await, Ok(Some(b"yy".to_vec())));
    kv.set(&a("1"), b"y".to_vec(), None, quota).await.expect("shrink");

    // Expiry gives the key back.
    kv.delete(&a("4")).await.expect("delete");
    kv.set(&a("t"), b"x".to_vec(), Some(Duration::from_millis(100)), quota).await.expect("expiring key");
    assert_eq!(kv.set(&a("5"), b"x".to_vec(), None, quota).await, Err(KvError::QuotaExceeded));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    kv.set(&a("5"), b"x".to_vec(), None, quota).await.expect("key freed by expiry");
    assert_eq!(kv.get(&a("t")).await, Ok(None));
    assert_eq!(kv.usage("alpha").await.map(|u| u.keys), Ok(3));
    assert_eq!(kv.usage("nobody").await, Ok(Usage::default()));
}

/// The batched calls: `get_many` answers in order; `incr_many` counts, sets its TTL on every
/// counter of the call (new or not), and leaves out — `None` — a counter the quota has no room
/// for, while counters that exist keep counting. Panics on a difference.
pub async fn batches(kv: &dyn KvStore) {
    let key = |k: &str| namespaced("gamma", "p", k);
    let quota = Quota { max_keys: 2, max_bytes: 10_000 };
    let long = Some(Duration::from_secs(100));
    kv.incr(&key("a"), 5, Some(Duration::from_millis(300)), quota).await.expect("a");
    let answers =
        kv.incr_many(&[(key("a"), 1), (key("b"), 2), (key("c"), 3)], long, quota).await.expect("incr_many");
    assert_eq!(answers, [Some(6), Some(2), None], "c has no room in a quota of two keys");
    // a now lives as long as the batch's TTL, not its own first 300 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let values = kv.get_many(&[key("a"), key("c"), key("b")]).await.expect("get_many");
    assert_eq!(values, [Some(b"6".to_vec()), None, Some(b"2".to_vec())]);
    assert_eq!(kv.incr_many(&[], long, quota).await, Ok(Vec::new()));
    assert_eq!(kv.get_many(&[]).await, Ok(Vec::new()));
    kv.delete(&key("a")).await.expect("delete");
    kv.delete(&key("b")).await.expect("delete");
}
