//! Storage against a model: random operation sequences on [`ObjectStorage`]
//! (with events that commit, trap, and batches that commit) are checked against
//! a `BTreeMap`, on a real redb file.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::range::prefix_successor;
use super::*;
use crate::metrics::Metrics;
use committer::{Committer, CommitterThread};

/// A small deterministic PRNG (xorshift) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(rng: &mut Rng) -> Vec<u8> {
    let prefixes = ["a", "ab", "b", "msg:", "z"];
    let p = prefixes[rng.below(prefixes.len() as u64) as usize];
    format!("{p}{}", rng.below(12)).into_bytes()
}

fn model_list(model: &BTreeMap<Vec<u8>, Vec<u8>>, q: &ListQuery) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = model
        .iter()
        .filter(|(k, _)| q.prefix.as_ref().is_none_or(|p| k.starts_with(p)))
        .filter(|(k, _)| match (&q.start_after, &q.start) {
            (Some(s), _) => k.as_slice() > s.as_slice(),
            (None, Some(s)) => k.as_slice() >= s.as_slice(),
            _ => true,
        })
        .filter(|(k, _)| q.end.as_ref().is_none_or(|e| k.as_slice() < e.as_slice()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if q.reverse {
        v.reverse();
    }
    v.truncate(q.limit.unwrap_or(usize::MAX));
    v
}

fn random_query(rng: &mut Rng) -> ListQuery {
    let opt = |rng: &mut Rng| (rng.below(3) == 0).then(|| key(rng));
    ListQuery {
        prefix: (rng.below(3) == 0)
            .then(|| [&b"a"[..], b"ab", b"msg:", b"q"][rng.below(4) as usize].to_vec()),
        start: opt(rng),
        start_after: (rng.below(5) == 0).then(|| key(rng)),
        end: opt(rng),
        limit: (rng.below(2) == 0).then(|| rng.below(6) as usize),
        reverse: rng.below(2) == 0,
    }
}

/// A database in a fresh directory, with a committer that does not fsync.
fn fresh_db(file: &str) -> (tempfile::TempDir, Db, Committer, CommitterThread) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join(file)).expect("open");
    let (committer, thread) =
        Committer::start(db.clone(), Durability::None, Arc::new(Metrics::default()))
            .expect("start");
    (dir, db, committer, thread)
}

#[tokio::test]
async fn storage_matches_a_model_across_events_traps_and_commits() {
    let (_dir, db, committer, _thread) = fresh_db("model.redb");
    let id = ObjectId::new("test", "model");
    // A neighbour object whose keys must never show up.
    let other = ObjectId::new("test", "model\u{1}");
    let mut neighbour = ObjectStorage::new(db.clone(), other.clone());
    neighbour
        .put(b"a1".to_vec(), b"other".to_vec())
        .expect("put");
    neighbour.end_event(true);
    committer
        .commit(other, neighbour.take_batch())
        .await
        .expect("commit");

    let mut storage = ObjectStorage::with_quota(db.clone(), id.clone(), 1 << 30);
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut batch = committed.clone();
    for seed in 1..=40u64 {
        let mut rng = Rng(seed * 0x9E37_79B9_7F4A_7C15);
        for _event in 0..6 {
            let mut view = batch.clone();
            for _op in 0..8 {
                match rng.below(10) {
                    0..=3 => {
                        let (k, v) = (key(&mut rng), rng.next().to_le_bytes().to_vec());
                        storage.put(k.clone(), v.clone()).expect("within the quota");
                        view.insert(k, v);
                    }
                    4 | 5 => {
                        let k = key(&mut rng);
                        let existed = storage.delete(k.clone()).expect("delete");
                        assert_eq!(existed, view.remove(&k).is_some());
                    }
                    6 => {
                        if rng.below(8) == 0 {
                            storage.delete_all();
                            view.clear();
                        }
                    }
                    7 => {
                        let k = key(&mut rng);
                        assert_eq!(storage.get(&k).expect("get"), view.get(&k).cloned());
                    }
                    _ => {
                        let q = random_query(&mut rng);
                        assert_eq!(
                            storage.list(&q).expect("list"),
                            model_list(&view, &q),
                            "{q:?}"
                        );
                    }
                }
            }
            // Two in three events succeed; the rest trap and roll back.
            let keep = rng.below(3) != 0;
            storage.end_event(keep);
            if keep {
                batch = view;
            }
        }
        if rng.below(2) == 0 {
            let used_now = committer
                .commit(id.clone(), storage.take_batch())
                .await
                .expect("commit");
            // As the actor does, most of the time: the view then knows its
            // usage without reading it, and passes it to the next commit.
            if seed % 4 != 0 {
                storage.committed(used_now);
            }
            committed = batch.clone();
            let used: usize = committed.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert_eq!(db.usage(&id).expect("usage"), used as u64, "usage is exact");
            assert_eq!(used_now, used as u64, "the committer reports it");
            assert_eq!(storage.usage().expect("usage"), used as u64);
            // A fresh view (as after a restart) sees exactly what was committed.
            let fresh = ObjectStorage::new(db.clone(), id.clone());
            assert_eq!(
                fresh.list(&ListQuery::default()).expect("list"),
                model_list(&committed, &ListQuery::default())
            );
        }
    }
    let _ = committed;
}

#[tokio::test]
async fn the_quota_refuses_growth_but_not_shrinking() {
    let (_dir, db, committer, _thread) = fresh_db("quota.redb");
    let id = ObjectId::new("test", "quota");
    let mut s = ObjectStorage::with_quota(db.clone(), id.clone(), 100);
    s.put(b"a".to_vec(), vec![0; 59]).expect("60 bytes fit");
    s.end_event(true);
    committer
        .commit(id.clone(), s.take_batch())
        .await
        .expect("commit");
    assert!(matches!(
        s.put(b"b".to_vec(), vec![0; 59]),
        Err(WriteError::QuotaExceeded(100))
    ));
    assert!(matches!(
        s.put_many(vec![
            (b"c".to_vec(), vec![0; 10]),
            (b"d".to_vec(), vec![0; 40])
        ]),
        Err(WriteError::QuotaExceeded(100))
    ));
    assert_eq!(
        s.get(b"c").expect("get"),
        None,
        "put-many is all or nothing"
    );
    s.put(b"a".to_vec(), vec![0; 9]).expect("shrinking is fine");
    s.put(b"b".to_vec(), vec![0; 59]).expect("now it fits");
    s.end_event(true);
    committer
        .commit(id.clone(), s.take_batch())
        .await
        .expect("commit");
    assert_eq!(db.usage(&id).expect("usage"), 70);
    s.delete_all();
    s.end_event(true);
    committer
        .commit(id.clone(), s.take_batch())
        .await
        .expect("commit");
    assert_eq!(db.usage(&id).expect("usage"), 0);
}

/// Near a small quota the view must refuse exactly the writes that would take
/// the exact usage past it — whatever its cheap upper bound says — across
/// events that trap, commits it is told about and commits it is not.
#[tokio::test]
async fn the_quota_is_exact_near_the_limit() {
    let (_dir, db, committer, _thread) = fresh_db("quota-model.redb");
    const QUOTA: usize = 120;
    let size =
        |m: &BTreeMap<Vec<u8>, Vec<u8>>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let (mut refused, mut accepted) = (0, 0);
    for seed in 1..=30u64 {
        let id = ObjectId::new("test", format!("quota-model-{seed}"));
        let mut storage = ObjectStorage::with_quota(db.clone(), id.clone(), QUOTA as u64);
        let mut rng = Rng(seed * 0x2545_F491_4F6C_DD1D);
        let mut batch: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for event in 0..40 {
            let mut view = batch.clone();
            for _op in 0..4 {
                match rng.below(8) {
                    0..=4 => {
                        let k = key(&mut rng);
                        let v = vec![7u8; rng.below(40) as usize];
                        let mut after = view.clone();
                        after.insert(k.clone(), v.clone());
                        let fits = size(&after) <= QUOTA || size(&after) <= size(&view);
                        match storage.put(k, v) {
                            Ok(()) => {
                                assert!(fits, "seed {seed}: accepted past the quota");
                                view = after;
                                accepted += 1;
                            }
                            Err(WriteError::QuotaExceeded(_)) => {
                                assert!(!fits, "seed {seed}: refused a write that fits");
                                refused += 1;
                            }
                            Err(WriteError::Storage(e)) => panic!("{e}"),
                        }
                    }
                    5 | 6 => {
                        let k = key(&mut rng);
                        storage.delete(k.clone()).expect("delete");
                        view.remove(&k);
                    }
                    _ => {
                        if rng.below(6) == 0 {
                            storage.delete_all();
                            view.clear();
                        }
                    }
                }
            }
            let keep = rng.below(4) != 0;
            storage.end_event(keep);
            if keep {
                batch = view;
            }
            if event % 3 == 2 {
                let used = committer
                    .commit(id.clone(), storage.take_batch())
                    .await
                    .expect("commit");
                assert_eq!(used, size(&batch) as u64);
                if rng.below(2) == 0 {
                    storage.committed(used);
                }
            }
        }
    }
    assert!(
        refused > 20 && accepted > 200,
        "{refused} refused, {accepted} accepted"
    );
}

#[test]
fn prefix_successor_bounds_the_prefix() {
    assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_successor(&[b'a', 0xFF]), Some(b"b".to_vec()));
    assert_eq!(prefix_successor(b""), None);
}
