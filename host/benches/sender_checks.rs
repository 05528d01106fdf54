//! Cost per message of the sender checks (SPF of HELO and MAIL FROM, every DKIM signature,
//! DMARC, ARC) with DNS answered by a fixture on loopback: the first message fills the cache
//! of parsed answers, as the relay's traffic does, so this is what a message costs once a
//! domain's records are known — parsing, hashing and the signature check. Run with
//! `cargo bench -p sluice --bench sender_checks`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::dns::FixtureResolver;
use sluice::sender::{Checker, CheckerSettings, DkimAlgorithm, DkimKey, Sender, generate_key};

const MESSAGE: &str = "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: Quarterly report\r\n\
Date: Thu, 1 Jan 2026 09:00:00 +0000\r\nMessage-ID: <20260101090000.1234@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nHi Bob,\r\n\r\nthe quarterly report is ready; see \
https://intranet.example.org/reports/q4 for details.\r\n\r\nAlice\r\n";

fn signed(algorithm: DkimAlgorithm, selector: &str, dir: &std::path::Path) -> (Vec<u8>, String) {
    let (pem, record) = generate_key(algorithm).expect("key");
    let path = dir.join(format!("{selector}.pem"));
    std::fs::write(&path, pem).expect("write key");
    let key = DkimKey::load(&path, "example.org", selector, &[]).expect("load key");
    let field = key.sign(MESSAGE.as_bytes()).expect("sign");
    (
        [field.as_bytes(), MESSAGE.as_bytes()].concat(),
        format!("{selector}._domainkey.example.org TXT {record}\n"),
    )
}

fn bench(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = std::env::temp_dir().join(format!("sluice-bench-sender-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (rsa, rsa_record) = signed(DkimAlgorithm::Rsa, "rsa", &dir);
    let (ed, ed_record) = signed(DkimAlgorithm::Ed25519, "ed", &dir);
    let fixture = format!(
        "example.org TXT v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all\n\
         _spf.example.net TXT v=spf1 ip4:198.51.100.0/24 -all\n\
         _dmarc.example.org TXT v=DMARC1; p=reject\nmx.example.org A 192.0.2.10\n{rsa_record}{ed_record}"
    );
    let fixture = FixtureResolver::parse(&fixture, "bench").expect("fixture");
    let checker =
        rt.block_on(Checker::from_fixture(Arc::new(fixture), CheckerSettings::default())).expect("checker");
    let ip: IpAddr = "198.51.100.7".parse().expect("ip");
    let sender =
        Sender { ip, helo: "mx.example.org", mail_from: "alice@example.org", hostname: "relay.test" };
    let timeout = Duration::from_secs(10);
    for (name, message) in [("unsigned", MESSAGE.as_bytes().to_vec()), ("rsa-2048", rsa), ("ed25519", ed)] {
        let checks = rt.block_on(checker.check(&sender, &message, timeout));
        assert_eq!(checks.spf.result.as_str(), "pass", "{checks:?}");
        assert_eq!(checks.dmarc.result.as_str(), "pass", "{checks:?}");
        c.bench_function(&format!("sender checks, {name}"), |b| {
            b.iter(|| rt.block_on(checker.check(&sender, &message, timeout)));
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
