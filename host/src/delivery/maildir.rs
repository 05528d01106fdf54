//! Delivery into a Maildir tree (`maildir:PATH` next hops): each recipient's own
//! `PATH/<recipient>/{tmp,new,cur}`, written in `tmp`, synced, renamed into `new`.

use std::path::{Path, PathBuf};

use super::RcptResult;
use crate::spool;

/// Deliver into `root/<recipient>/{tmp,new,cur}` (Maildir): write in `tmp`, fsync, rename into
/// `new`, fsync the directory.
pub fn maildir_deliver(
    root: &Path,
    mail_from: &str,
    recipients: &[String],
    message: &[u8],
) -> Vec<RcptResult> {
    recipients
        .iter()
        .map(|rcpt| match maildir_one(root, mail_from, rcpt, message) {
            Ok(path) => RcptResult::Delivered(format!("250 2.0.0 delivered to {}", path.display())),
            Err(e) => RcptResult::Transient(format!("451 4.3.0 maildir: {e}")),
        })
        .collect()
}

fn maildir_one(root: &Path, mail_from: &str, rcpt: &str, message: &[u8]) -> std::io::Result<PathBuf> {
    let mailbox: String = rcpt
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '@') { c } else { '_' })
        .collect();
    let mailbox = if mailbox.starts_with('.') { format!("_{mailbox}") } else { mailbox };
    let dir = root.join(mailbox);
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let name = format!("{}.{}.sluice", spool::now_secs(), spool::new_id());
    let tmp = dir.join("tmp").join(&name);
    let mut content = format!("Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
    content.extend_from_slice(message);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&content)?;
        file.sync_all()?;
    }
    let target = dir.join("new").join(&name);
    std::fs::rename(&tmp, &target)?;
    spool::sync_dir(&dir.join("new"))?;
    Ok(target)
}
