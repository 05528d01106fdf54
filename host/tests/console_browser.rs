//! The web console in a real browser (Debian's `chromium` and `chromium-driver`, which
//! scripts/test.sh installs): it loads, asks for the token, shows the transactions and the
//! quarantine once mail flows, releasing a quarantined message delivers it, it fits a
//! phone's screen, and a page left open across a relay restart recovers by itself. The
//! browser's screenshot is docs/console.png's source (`SLUICE_SCREENSHOT=docs/console.png`).

mod relay_common;

use relay_common::*;
use sluice_test_artifacts::PROBE;

#[test]
fn the_console_in_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "chromium-driver is not installed (apt-get install chromium chromium-driver; scripts/test.sh does)"
    );
    let dir = temp_dir("console-browser");
    let screenshot = std::env::var("SLUICE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.join("console.png"));
    let out = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/console_browser.py"))
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg(PROBE)
        .arg(&dir)
        .arg(&screenshot)
        .output()
        .expect("python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("console ok"),
        "{stdout}\n{stderr}\nrelay log:\n{}",
        log(&dir)
    );
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000), "no screenshot");
}
