use super::*;

fn envelope(id: &str) -> QueuedMessage {
    QueuedMessage {
        id: id.into(),
        tenant: "t".into(),
        mail_from: "a@example.org".into(),
        recipients: vec![QueuedRecipient {
            address: "b@example.com".into(),
            status: RecipientStatus::Pending,
            last_reply: None,
            bounced: false,
        }],
        received_at: 1,
        attempts: 0,
        next_attempt: 1,
        route: None,
        quarantine_reason: None,
        inbound: false,
        sender_authenticated: false,
    }
}

/// A new spool in a folder of its own.
fn temp_spool(mode: SyncMode) -> (PathBuf, Spool) {
    let dir = std::env::temp_dir().join(format!("sluice-spool-{}", new_id()));
    let spool = Spool::open(&dir, mode).unwrap();
    (dir, spool)
}

fn queue_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("queue"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn store_recover_remove() {
    for mode in [SyncMode::Group, SyncMode::File] {
        let (dir, spool) = temp_spool(mode);
        let id = new_id();
        let body = b"Subject: x\r\n\r\nhi\r\n";
        spool.store(Store::Queue, &envelope(&id), body).unwrap();
        assert!(spool.store(Store::Queue, &envelope(&id), body).is_err(), "ids are never reused");
        assert_eq!(queue_files(&dir), vec![format!("{id}.mail")]);
        // Leftovers of a crash: a temporary file, a spool file cut short, one empty.
        let whole = encode(&envelope("ABCDEF"), body).unwrap();
        fs::write(dir.join("queue").join(".ABCDEF.1.tmp"), b"x").unwrap();
        fs::write(dir.join("queue").join("ABCDEF.mail"), &whole[..whole.len() - 3]).unwrap();
        fs::write(dir.join("queue").join("ABCDE0.mail"), b"").unwrap();
        // While the relay runs they are writes in progress: listing leaves them alone.
        assert_eq!(spool.list(Store::Queue).unwrap(), vec![envelope(&id)]);
        assert_eq!(queue_files(&dir).len(), 4);
        let found = spool.recover(Store::Queue).unwrap();
        assert_eq!(found, vec![envelope(&id)]);
        assert_eq!(queue_files(&dir), vec![format!("{id}.mail")]);
        assert_eq!(spool.message(Store::Queue, &id).unwrap(), body);
        // Delivery progress keeps the message.
        let mut progressed = envelope(&id);
        progressed.attempts = 3;
        spool.update(Store::Queue, &progressed).unwrap();
        assert_eq!(spool.envelope(Store::Queue, &id).unwrap(), progressed);
        assert_eq!(spool.message(Store::Queue, &id).unwrap(), body);
        spool.transfer(Store::Queue, Store::Quarantine, &progressed).unwrap();
        assert!(spool.recover(Store::Queue).unwrap().is_empty());
        assert_eq!(spool.recover(Store::Quarantine).unwrap(), vec![progressed]);
        spool.remove(Store::Quarantine, &id).unwrap();
        assert!(spool.recover(Store::Quarantine).unwrap().is_empty());
        assert!(spool.message(Store::Queue, "../etc/passwd").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}

/// A spool file damaged after it was written fails its CRC check: never delivered as it
/// is, but still movable (to the quarantine) for an operator to look at.
#[test]
fn damaged_message_is_detected() {
    let (dir, spool) = temp_spool(SyncMode::Group);
    let id = new_id();
    spool.store(Store::Queue, &envelope(&id), b"Subject: x\r\n\r\nwhole body\r\n").unwrap();
    let path = dir.join("queue").join(format!("{id}.mail"));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let err = spool.message(Store::Queue, &id).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    spool.transfer(Store::Queue, Store::Quarantine, &envelope(&id)).unwrap();
    assert!(spool.message(Store::Quarantine, &id).is_ok(), "stored again with its own CRC");
    let _ = fs::remove_dir_all(&dir);
}

/// Spool folders of earlier versions (an envelope file and a message file) are converted
/// at start.
#[test]
fn earlier_layout_is_converted() {
    let (dir, spool) = temp_spool(SyncMode::Group);
    let id = new_id();
    let queue = dir.join("queue");
    fs::write(queue.join(format!("{id}.json")), serde_json::to_vec(&envelope(&id)).unwrap()).unwrap();
    fs::write(queue.join(format!("{id}.msg")), b"Subject: old\r\n\r\nbody\r\n").unwrap();
    fs::write(queue.join("ABCDEF.msg"), b"no envelope").unwrap();
    assert_eq!(spool.recover(Store::Queue).unwrap(), vec![envelope(&id)]);
    assert_eq!(spool.message(Store::Queue, &id).unwrap(), b"Subject: old\r\n\r\nbody\r\n");
    assert_eq!(queue_files(&dir), vec![format!("{id}.mail")]);
    let _ = fs::remove_dir_all(&dir);
}

/// Many threads storing at once: each returns only after a commit that began after its
/// writes, and everything is there.
#[test]
fn group_commit_under_concurrency() {
    let (dir, spool) = temp_spool(SyncMode::Group);
    let spool = std::sync::Arc::new(spool);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    spool.store(Store::Queue, &envelope(&new_id()), b"x\r\n").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(spool.recover(Store::Queue).unwrap().len(), 200);
    assert_eq!(spool.group.counts(), (200, 200, false));
    let _ = fs::remove_dir_all(&dir);
}

/// Tasks store without holding threads and share commits; a removal done later hides
/// the message at once and its file goes soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_from_tasks_and_removals_later() {
    for mode in [SyncMode::Group, SyncMode::File] {
        let (dir, spool) = temp_spool(mode);
        let spool = Arc::new(spool);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    let envelope = envelope(&new_id());
                    let body = Arc::new(b"Subject: t\r\n\r\nbody\r\n".to_vec());
                    spool.store_async(Store::Queue, &envelope, &body).await.unwrap();
                    envelope.id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        assert_eq!(spool.list(Store::Queue).unwrap().len(), 50);
        for id in &ids[..20] {
            spool.remove_later(Store::Queue, id).unwrap();
            assert!(!spool.contains(Store::Queue, id));
            assert_eq!(spool.envelope(Store::Queue, id).unwrap_err().kind(), io::ErrorKind::NotFound);
        }
        assert_eq!(spool.list(Store::Queue).unwrap().len(), 30);
        drop(spool);
        // Dropping the spool finishes the removals it had queued.
        assert_eq!(queue_files(&dir).len(), 30, "{mode:?}");
        let _ = fs::remove_dir_all(&dir);
    }
}

#[test]
fn ids_are_unique_and_ordered() {
    let a = new_id();
    let b = new_id();
    assert_ne!(a, b);
    assert!(valid_id(&a));
    assert!(!valid_id("x/../y"));
}

#[test]
fn earlier_bounce_marks_are_read_as_the_field() {
    let json =
        r#"{"address":"b@example.com","status":"failed","last_reply":"[bounced] 550 5.1.1 no such user"}"#;
    let recipient: QueuedRecipient = serde_json::from_str(json).unwrap();
    assert!(recipient.bounced);
    assert_eq!(recipient.last_reply.as_deref(), Some("550 5.1.1 no such user"));
    let again: QueuedRecipient = serde_json::from_str(&serde_json::to_string(&recipient).unwrap()).unwrap();
    assert_eq!(again, recipient);
}
