//! The `Authentication-Results` field (RFC 8601) of a message's checks.

use super::{SenderChecks, Verdict};

/// A value with characters RFC 8601 does not allow in a `pvalue` removed (the domains come
/// from the message and its envelope).
fn clean(value: &str) -> String {
    value.chars().filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')' | '"' | '\\')).collect()
}

/// The field's value, one result per folded line.
pub(super) fn value(checks: &SenderChecks, authserv_id: &str) -> String {
    let mut parts = vec![clean(authserv_id)];
    let spf = &checks.spf;
    if spf.domain.is_empty() {
        parts.push(format!("spf={}", spf.result.as_str()));
    } else if checks.null_sender {
        // The null sender: the HELO identity was checked (RFC 7208 §2.4).
        parts.push(format!("spf={} smtp.helo={}", spf.result.as_str(), clean(&spf.domain)));
    } else {
        parts.push(format!("spf={} smtp.mailfrom={}", spf.result.as_str(), clean(&spf.domain)));
    }
    if checks.dkim.is_empty() {
        parts.push("dkim=none".to_string());
    }
    for dkim in &checks.dkim {
        let reason = match (&dkim.reason, dkim.result) {
            (Some(reason), result) if result != Verdict::Pass => format!(" ({})", clean_comment(reason)),
            _ => String::new(),
        };
        parts.push(format!(
            "dkim={}{reason} header.d={} header.s={} header.a={}",
            dkim.result.as_str(),
            clean(&dkim.domain),
            clean(&dkim.selector),
            clean(&dkim.algorithm)
        ));
    }
    let dmarc = &checks.dmarc;
    let policy = dmarc.policy.map(|p| format!(" (p={})", p.as_str())).unwrap_or_default();
    if dmarc.domain.is_empty() {
        parts.push(format!("dmarc={}", dmarc.result.as_str()));
    } else {
        parts.push(format!("dmarc={}{policy} header.from={}", dmarc.result.as_str(), clean(&dmarc.domain)));
    }
    parts.push(format!("arc={}", checks.arc.result.as_str()));
    parts.join(";\r\n\t")
}

/// A comment's text: printable ASCII without parentheses or backslashes.
fn clean_comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' })
        .filter(|c| !matches!(c, '(' | ')' | '\\'))
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck};
    use super::*;

    #[test]
    fn every_result_is_named() {
        let checks = SenderChecks {
            spf: SpfCheck { result: Verdict::Pass, domain: "example.org".into() },
            helo: SpfCheck { result: Verdict::None, domain: "mx.example.org".into() },
            dkim: vec![DkimCheck {
                result: Verdict::Fail,
                domain: "example.org".into(),
                selector: "s1".into(),
                algorithm: "rsa-sha256".into(),
                reason: Some("body hash (mismatch)".into()),
            }],
            dmarc: DmarcCheck {
                result: Verdict::Pass,
                domain: "example.org".into(),
                policy: Some(DmarcPolicy::Reject),
                pct: 100,
                spf_aligned: true,
                ..DmarcCheck::default()
            },
            ..SenderChecks::default()
        };
        assert_eq!(
            checks.header_value("relay.example.net"),
            "relay.example.net;\r\n\tspf=pass smtp.mailfrom=example.org;\r\n\t\
             dkim=fail (body hash mismatch) header.d=example.org header.s=s1 header.a=rsa-sha256;\r\n\t\
             dmarc=pass (p=reject) header.from=example.org;\r\n\tarc=none"
        );
    }
}
