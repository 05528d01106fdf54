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

/// A folder of its own for a spool.
fn spool_dir() -> PathBuf {
    std::env::temp_dir().join(format!("sluice-spool-{}", new_id()))
}

/// A new spool in a folder of its own.
fn temp_spool(mode: SyncMode) -> (PathBuf, Spool) {
    let dir = spool_dir();
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

fn free_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir.join(recycle::FREE_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Delivered messages' files are kept (up to the cap) and written over by new messages,
/// which read back whole whatever the size of the file they reuse.
#[test]
fn delivered_files_are_reused() {
    use std::os::unix::fs::MetadataExt;
    for mode in [SyncMode::Group, SyncMode::File] {
        let dir = spool_dir();
        let spool = Spool::open_recycling(&dir, mode, 3).unwrap();
        let long = vec![b'x'; 20_000];
        for _ in 0..5 {
            let id = new_id();
            spool.store(Store::Queue, &envelope(&id), &long).unwrap();
            spool.remove_later(Store::Queue, &id).unwrap();
        }
        drop(spool);
        assert!(queue_files(&dir).is_empty());
        let free = free_files(&dir);
        assert_eq!(free.len(), 3, "kept up to the cap, the rest unlinked");
        assert!(free.iter().all(|f| fs::metadata(f).unwrap().len() == 0), "kept files are emptied");
        let inodes: Vec<u64> = free.iter().map(|f| fs::metadata(f).unwrap().ino()).collect();

        // A later run uses them: a shorter message, then a longer one.
        let spool = Spool::open_recycling(&dir, mode, 3).unwrap();
        assert_eq!(spool.recycler.as_ref().unwrap().kept(), 3);
        let (short_id, long_id) = (new_id(), new_id());
        spool.store(Store::Queue, &envelope(&short_id), b"Subject: s\r\n\r\nshort\r\n").unwrap();
        let longer = vec![b'y'; 50_000];
        spool.store(Store::Queue, &envelope(&long_id), &longer).unwrap();
        for id in [&short_id, &long_id] {
            let ino = fs::metadata(dir.join("queue").join(format!("{id}.mail"))).unwrap().ino();
            assert!(inodes.contains(&ino), "{mode:?}: a kept file was used");
        }
        assert_eq!(spool.message(Store::Queue, &short_id).unwrap(), b"Subject: s\r\n\r\nshort\r\n");
        assert_eq!(spool.message(Store::Queue, &long_id).unwrap(), longer);
        assert_eq!(free_files(&dir).len(), 1);
        assert_eq!(spool.recover(Store::Queue).unwrap().len(), 2);
        // Ids are still never reused: storing one again fails, whatever file it would take.
        assert_eq!(
            spool.store(Store::Queue, &envelope(&short_id), b"again").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(spool.message(Store::Queue, &short_id).unwrap(), b"Subject: s\r\n\r\nshort\r\n");
        drop(spool);
        let _ = fs::remove_dir_all(&dir);
    }
}

/// What a crash can leave of a reused file: its old bytes under a new message's name (the
/// rename reached the disk, the writes did not). Recovery removes it; nothing else goes.
#[test]
fn a_reused_file_with_old_bytes_is_not_delivered() {
    let dir = spool_dir();
    let spool = Spool::open_recycling(&dir, SyncMode::Group, 8).unwrap();
    let kept = new_id();
    spool.store(Store::Queue, &envelope(&kept), b"Subject: k\r\n\r\nkept\r\n").unwrap();
    let queue = dir.join("queue");
    let stale = new_id();
    fs::copy(queue.join(format!("{kept}.mail")), queue.join(format!("{stale}.mail"))).unwrap();
    assert_eq!(spool.recover(Store::Queue).unwrap(), vec![envelope(&kept)]);
    assert_eq!(queue_files(&dir), vec![format!("{kept}.mail")]);
    drop(spool);
    let _ = fs::remove_dir_all(&dir);
}

/// A free file that also has a name in the queue (a crash between a rename and its sync,
/// repaired by a file-system check) is never written into; without recycling the folder of
/// kept files is emptied.
#[test]
fn kept_files_with_a_second_name_and_turning_recycling_off() {
    let dir = spool_dir();
    let spool = Spool::open_recycling(&dir, SyncMode::Group, 8).unwrap();
    let id = new_id();
    spool.store(Store::Queue, &envelope(&id), b"Subject: q\r\n\r\nqueued\r\n").unwrap();
    drop(spool);
    let queued = dir.join("queue").join(format!("{id}.mail"));
    fs::hard_link(&queued, dir.join(recycle::FREE_DIR).join("1.free")).unwrap();
    fs::write(dir.join(recycle::FREE_DIR).join("2.free"), b"old").unwrap();
    let spool = Spool::open_recycling(&dir, SyncMode::Group, 8).unwrap();
    assert_eq!(spool.recycler.as_ref().unwrap().kept(), 1, "only the file with one name");
    assert_eq!(free_files(&dir).len(), 1);
    assert_eq!(fs::metadata(&free_files(&dir)[0]).unwrap().len(), 0, "emptied at start");
    spool.store(Store::Queue, &envelope(&new_id()), b"Subject: n\r\n\r\nnew\r\n").unwrap();
    assert_eq!(spool.message(Store::Queue, &id).unwrap(), b"Subject: q\r\n\r\nqueued\r\n");
    drop(spool);
    fs::write(dir.join(recycle::FREE_DIR).join("3.free"), b"old").unwrap();
    // The queue tools leave the folder to the relay that may be using it.
    drop(Spool::open(&dir, SyncMode::Group).unwrap());
    assert_eq!(free_files(&dir).len(), 1);
    let spool = Spool::open_recycling(&dir, SyncMode::Group, 0).unwrap();
    assert!(spool.recycler.is_none());
    assert!(free_files(&dir).is_empty());
    assert_eq!(spool.recover(Store::Queue).unwrap().len(), 2);
    drop(spool);
    let _ = fs::remove_dir_all(&dir);
}
