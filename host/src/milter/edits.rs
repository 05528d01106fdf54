//! The modifications that turn the message the MTA holds into the one the relay would have
//! queued: header fields added at the top (the policies' `add-header`, `X-Spam-*`,
//! `Authentication-Results`, a DKIM signature), fields removed (the policies'
//! `remove-header`, and the fields the relay owns that the client sent), recipients added and
//! removed. Worked out by comparing the two, so that whatever the conversation does to a
//! message reaches the MTA without being written twice.

use super::codec::Response;

/// One header field: its name and its value (after the colon, unfolded lines kept).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
}

impl Field {
    fn same(&self, other: &Field) -> bool {
        self.name.eq_ignore_ascii_case(&other.name) && normal(&self.value) == normal(&other.value)
    }
}

/// A value compared without its folding and outer spaces.
fn normal(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The header fields of `message`, in order.
fn fields(message: &[u8]) -> Vec<Field> {
    let head_end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |p| p + 2);
    let text = String::from_utf8_lossy(&message[..head_end]);
    let mut out: Vec<Field> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.value.push_str("\r\n");
                last.value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push(Field { name: name.to_string(), value: value.to_string() });
        }
    }
    out
}

/// The header changes from the MTA's fields (`original`, name and raw value) to the
/// relay's `message` (whose first field is the relay's own Received, which the MTA writes
/// for itself). `leading_space`: values are given with their leading space (negotiated).
pub fn headers(original: &[(String, Vec<u8>)], message: &[u8], leading_space: bool) -> Vec<Response> {
    let before: Vec<Field> = original
        .iter()
        .map(|(name, value)| Field { name: name.clone(), value: String::from_utf8_lossy(value).into_owned() })
        .collect();
    let after: Vec<Field> = fields(message).into_iter().skip(1).collect();
    // The relay only adds at the top and removes: match from the bottom.
    let mut kept = vec![false; before.len()];
    let mut j = after.len();
    for i in (0..before.len()).rev() {
        if j > 0 && before[i].same(&after[j - 1]) {
            kept[i] = true;
            j -= 1;
        }
    }
    let mut responses = Vec::new();
    for (index, field) in after[..j].iter().enumerate() {
        responses.push(Response::InsertHeader {
            index: index as u32,
            name: field.name.clone(),
            value: outgoing(&field.value, leading_space),
        });
    }
    // Deleted from the last occurrence up, so that no index moves under a later one.
    let mut deletions: Vec<(u32, String)> = Vec::new();
    for (i, field) in before.iter().enumerate() {
        if !kept[i] {
            let occurrence = before[..=i].iter().filter(|f| f.name.eq_ignore_ascii_case(&field.name)).count();
            deletions.push((occurrence as u32, field.name.clone()));
        }
    }
    deletions.sort_by_key(|d| std::cmp::Reverse(d.0));
    responses.extend(deletions.into_iter().map(|(index, name)| Response::ChangeHeader {
        index,
        name,
        value: String::new(),
    }));
    responses
}

/// A value as the MTA takes it: folded lines with LF alone, the leading space when it was
/// negotiated (the MTA adds one otherwise).
fn outgoing(value: &str, leading_space: bool) -> String {
    let trimmed = value.trim_start_matches([' ', '\t']).replace("\r\n", "\n");
    if leading_space { format!(" {trimmed}") } else { trimmed }
}

/// The bare address of a path (`<a@b>` → `a@b`).
fn bare(path: &str) -> &str {
    path.trim().trim_start_matches('<').trim_end_matches('>')
}

/// The recipient changes from those the MTA accepted (`accepted`, as it gave them) to those
/// the relay would deliver to (`kept`).
pub fn recipients(accepted: &[String], kept: &[&str]) -> Vec<Response> {
    let mut responses = Vec::new();
    for path in accepted {
        if !kept.iter().any(|k| k.eq_ignore_ascii_case(bare(path))) {
            responses.push(Response::DelRcpt(path.clone()));
        }
    }
    for address in kept {
        if !accepted.iter().any(|a| bare(a).eq_ignore_ascii_case(address)) {
            responses.push(Response::AddRcpt(format!("<{address}>")));
        }
    }
    responses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_string(), value.as_bytes().to_vec())
    }

    #[test]
    fn additions_at_the_top_and_removals_by_occurrence() {
        let original = vec![
            field("Received", " from a by b"),
            field("X-Spam-Flag", " YES"),
            field("Subject", " hi"),
            field("X-Spam-Flag", " YES"),
            field("X-Tag", " one\r\n\ttwo"),
        ];
        let message = b"Received: from c by relay\r\n\tid 1\r\nAuthentication-Results: relay; spf=pass\r\n\
X-Spam-Score: 2.0\r\nReceived: from a by b\r\nSubject: hi\r\nX-Tag: one\r\n\ttwo\r\n\r\nbody\r\n";
        let edits = headers(&original, message, true);
        assert_eq!(
            edits,
            vec![
                Response::InsertHeader {
                    index: 0,
                    name: "Authentication-Results".into(),
                    value: " relay; spf=pass".into()
                },
                Response::InsertHeader { index: 1, name: "X-Spam-Score".into(), value: " 2.0".into() },
                Response::ChangeHeader { index: 2, name: "X-Spam-Flag".into(), value: String::new() },
                Response::ChangeHeader { index: 1, name: "X-Spam-Flag".into(), value: String::new() },
            ]
        );
        assert!(
            headers(&original[..1], b"Received: ours\r\nReceived: from a by b\r\n\r\n", false).is_empty()
        );
    }

    #[test]
    fn recipients_added_and_removed() {
        let accepted = vec!["<a@x.test>".to_string(), "<B@x.test>".to_string()];
        assert_eq!(
            recipients(&accepted, &["b@x.test", "c@x.test"]),
            vec![Response::DelRcpt("<a@x.test>".into()), Response::AddRcpt("<c@x.test>".into())]
        );
    }
}
