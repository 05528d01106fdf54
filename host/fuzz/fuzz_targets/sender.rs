//! What senders publish and send, read by the sender checks: any text after `v=spf1 ` as an
//! SPF record (read, and its macros expanded), and any bytes as a message whose
//! `DKIM-Signature`, `ARC-*` and `From` fields the DKIM, ARC and DMARC checks read. Neither
//! may panic; a record is valid or not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let record = format!("v=spf1 {text}");
        let _ = sluice::sender::spf_record_is_valid(&record);
    }
    if let Some(message) = mail_auth::AuthenticatedMessage::parse(bytes) {
        for signature in &message.dkim_headers {
            assert!(signature.value.len() <= bytes.len());
        }
        let _ = message.from();
    }
});
