//! The rules. Each looks at one trait of the message and, when it fires, yields a symbol with
//! its default score. Scores follow SpamAssassin's scale: alone, no rule but the test
//! signature and dangerous attachments reaches the 5.0 spam threshold; spam trips several.

use memchr::memmem;
use sluice_policy::{Mailbox, Message};

use crate::text::{Link, base_domain, html_links, html_to_text, parse_date, text_urls, url_host};

/// Every symbol this policy can give.
pub const SYMBOLS: &[&str] = &[
    "GTUBE",
    "MISSING_DATE",
    "DATE_NO_TIMEZONE",
    "DATE_IN_FUTURE",
    "DATE_IN_PAST",
    "MISSING_MESSAGE_ID",
    "INVALID_MESSAGE_ID",
    "MISSING_FROM",
    "FROM_DISPLAY_SPOOF",
    "FROM_NAME_ALL_CAPS",
    "REPLYTO_FREEMAIL_DIFFERS",
    "MISSING_TO",
    "TO_UNDISCLOSED",
    "FROM_LOCAL_DIGITS",
    "MANY_VISIBLE_RECIPIENTS",
    "SUBJ_ALL_CAPS",
    "SUBJ_EXCLAIM",
    "SUBJ_MONEY",
    "SUBJ_URGENCY",
    "SUBJ_UNIQUE_ID",
    "SUBJ_PADDED",
    "FROM_NO_DISPLAY_NAME",
    "SUBJ_ADV",
    "SUBJ_PERCENT",
    "BODY_TOLL_FREE",
    "PRIORITY_HIGH",
    "MSMAIL_PRIORITY_NOT_OUTLOOK",
    "MISSING_MIME_VERSION",
    "HTML_ONLY",
    "HTML_HIDDEN_TEXT",
    "HTML_TINY_FONT",
    "HTML_BIG_FONT",
    "HTML_IMAGE_HEAVY",
    "HTML_SCRIPT_FORM",
    "LINKS_MANY",
    "LINK_IP_LITERAL",
    "LINK_OBFUSCATED",
    "LINK_TEXT_MISMATCH",
    "LINK_SHORTENER",
    "BODY_SPAM_PHRASES",
    "BODY_REMOVE_INSTRUCTIONS",
    "BODY_COMPLIANCE_CLAIM",
    "BODY_ADVANCE_FEE",
    "BODY_PHARMA",
    "BODY_PHISH_ACCOUNT",
    "BODY_SHOUTING",
    "BODY_EXCLAIM_MANY",
    "BODY_MONEY_AMOUNTS",
    "ATTACH_EXECUTABLE",
    "ATTACH_DOUBLE_EXTENSION",
    "ATTACH_MACRO_DOCUMENT",
    "RCVD_HELO_BARE_IP",
    "FORGED_FREEMAIL_RCVD",
    "DATE_TZ_ABSURD",
    "BODY_DEAR_GENERIC",
    "HEADER_8BIT",
    "BODY_8BIT_UNDECLARED",
    "X_MAILER_RANDOM",
    "MSGID_LETTERS_ONLY",
    "BODY_HASHBUSTER",
];

/// What the rules read, gathered from the message once.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// All header fields in order.
    pub headers: Vec<(String, String)>,
    /// Subject.
    pub subject: Option<String>,
    /// From mailboxes.
    pub from: Vec<Mailbox>,
    /// Reply-To mailboxes.
    pub reply_to: Vec<Mailbox>,
    /// To and Cc mailboxes.
    pub recipients: Vec<Mailbox>,
    /// Date as Unix seconds.
    pub date: Option<i64>,
    /// Message-ID.
    pub message_id: Option<String>,
    /// text/plain body.
    pub text: Option<String>,
    /// text/html body.
    pub html: Option<String>,
    /// Attachment names and content types.
    pub attachments: Vec<(Option<String>, String)>,
    /// The header block as received, bytes (bounded).
    pub raw_head: Vec<u8>,
    /// The start of the body as received, bytes (bounded).
    pub raw_body: Vec<u8>,
    /// Reverse DNS name of the connected client, when the relay knows it.
    pub client_rdns: Option<String>,
}

impl Input {
    /// Read what the rules need from the host's message.
    pub fn from_message(message: &Message, client_rdns: Option<String>, max_body_bytes: u32) -> Self {
        let headers = message.headers().into_iter().map(|h| (h.name, h.value)).collect();
        let mut recipients = message.to();
        recipients.extend(message.cc());
        let (raw_head, raw_body) = split_raw(message.raw(0, RAW_HEAD_BYTES + RAW_BODY_BYTES));
        Self {
            raw_head,
            raw_body,
            client_rdns,
            headers,
            subject: message.subject(),
            from: message.from(),
            reply_to: message.reply_to(),
            recipients,
            date: message.date(),
            message_id: message.message_id(),
            text: message.text_body(max_body_bytes),
            html: message.html_body(max_body_bytes),
            attachments: message.attachments().into_iter().map(|a| (a.name, a.content_type)).collect(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How much of the raw header block and of the raw body the byte-level rules read.
const RAW_HEAD_BYTES: u32 = 64 * 1024;
const RAW_BODY_BYTES: u32 = 16 * 1024;

/// Split the start of a raw message at the blank line that ends its header block.
fn split_raw(mut raw: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    // The first line break followed by an empty line (LF or CRLF endings).
    let end = (0..raw.len()).find_map(|i| match raw[i..] {
        [b'\n', b'\n', ..] => Some((i + 1, i + 2)),
        [b'\n', b'\r', b'\n', ..] => Some((i + 1, i + 3)),
        _ => None,
    });
    match end {
        Some((head_end, body_start)) => {
            let body = raw.split_off(body_start);
            raw.truncate(head_end);
            (raw, body)
        }
        None => (raw, Vec::new()),
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Symbol name.
    pub name: &'static str,
    /// Default score.
    pub score: f64,
    /// What was seen.
    pub detail: Option<String>,
}

struct Hits(Vec<Hit>);

impl Hits {
    fn add(&mut self, name: &'static str, score: f64, detail: impl Into<Option<String>>) {
        self.0.push(Hit { name, score, detail: detail.into() });
    }
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

const FREEMAIL: &[&str] = &[
    "china.com",
    "sohu.com",
    "sina.com",
    "163.com",
    "126.com",
    "qq.com",
    "usa.net",
    "email.com",
    "earthlink.net",
    "web.de",
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "aol.com",
    "msn.com",
    "live.com",
    "mail.com",
    "gmx.com",
    "gmx.net",
    "yandex.ru",
    "mail.ru",
    "protonmail.com",
    "icloud.com",
    "excite.com",
    "lycos.com",
    "netscape.net",
    "juno.com",
    "rediffmail.com",
    "yahoo.co.uk",
    "hotmail.co.uk",
];

const SHORTENERS: &[&str] =
    &["bit.ly", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly", "cutt.ly", "rb.gy"];

const EXECUTABLE: &[&str] = &[
    "exe", "scr", "pif", "bat", "com", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "jar", "msi",
    "ps1", "lnk", "reg", "cpl", "iso", "img",
];

const MACRO_DOCS: &[&str] = &["docm", "xlsm", "pptm", "dotm", "xlam"];

const SUBJ_MONEY: &[&str] = &[
    "free",
    "cash",
    "money",
    "income",
    "loan",
    "mortgage",
    "credit",
    "debt",
    "viagra",
    "pills",
    "weight",
    "winner",
    "prize",
    "earn",
    "rich",
    "profit",
    "discount",
    "cheap",
    "lowest",
    "save ",
    "$$",
    "casino",
    "refinance",
    "bonus",
];

const SUBJ_URGENCY: &[&str] = &[
    "urgent",
    "act now",
    "limited time",
    "last chance",
    "final notice",
    "immediately",
    "don't miss",
    "dont miss",
    "expires",
    "response required",
    "action required",
    "attention:",
    "important notice",
];

/// Phrases of bulk advertising, each worth a little; their sum is capped.
const SPAM_PHRASES: &[(&str, f64)] = &[
    ("click here", 0.4),
    ("click below", 0.6),
    ("100% free", 1.0),
    ("100% guaranteed", 1.0),
    ("risk free", 0.8),
    ("risk-free", 0.8),
    ("no obligation", 0.8),
    ("act now", 0.8),
    ("order now", 0.6),
    ("order today", 0.6),
    ("limited time", 0.6),
    ("money back", 0.6),
    ("dear friend", 1.0),
    ("special promotion", 0.6),
    ("satisfaction guaranteed", 0.8),
    ("work from home", 1.0),
    ("home based business", 1.0),
    ("extra income", 1.0),
    ("make money", 0.8),
    ("financial freedom", 1.0),
    ("lose weight", 1.0),
    ("weight loss", 0.8),
    ("you have been selected", 1.0),
    ("you have won", 1.0),
    ("call now", 0.6),
    ("toll free", 0.5),
    ("toll-free", 0.5),
    ("credit card", 0.3),
    ("lowest rate", 0.8),
    ("mortgage", 0.6),
    ("refinance", 0.8),
    ("guarantee", 0.3),
    ("increase your", 0.5),
    ("incredible", 0.3),
    ("as seen on", 0.8),
    ("don't delete", 1.0),
    ("do not delete", 1.0),
    ("one time mailing", 1.2),
    ("one-time mailing", 1.2),
    ("bulk email", 1.0),
    ("email marketing", 0.6),
    ("24 hours a day", 0.8),
    ("call today", 0.8),
    ("apply now", 0.8),
    ("free quote", 0.8),
    ("no cost", 0.6),
    ("pre-approved", 1.0),
    ("you're approved", 1.0),
    ("you are approved", 1.0),
    ("print this page", 0.8),
    ("no one is turned down", 1.2),
    ("serious inquiries", 1.0),
    ("marketing company", 1.0),
    ("this advertisement", 0.6),
    ("investment opportunity", 1.0),
    ("excluded from further", 1.5),
    ("opted in", 0.8),
    ("opt-in", 0.5),
    ("affiliate", 0.4),
    ("special offer", 0.4),
    ("do not wish to receive", 0.8),
    ("free gift", 1.0),
    ("value)", 0.5),
    ("order by", 0.4),
    ("click here now", 0.8),
    ("dear sir or madam", 0.8),
    ("business opportunity", 1.0),
    ("unsolicited", 0.4),
    ("sent this email in error", 0.8),
    ("sent to you in error", 0.8),
    ("call us today", 0.8),
    ("immediate cash", 1.0),
    ("cash bonus", 1.0),
    ("risk-free trial", 1.0),
    ("save up to", 0.8),
    ("per week", 0.4),
    ("no experience", 0.8),
    ("be your own boss", 1.2),
    ("debt free", 1.0),
    ("credit report", 0.8),
    ("consolidate", 0.6),
    ("get paid", 0.8),
    ("double your", 1.0),
    ("dear sir", 0.8),
    ("dear customer", 0.8),
    ("dear member", 0.8),
    ("dear valued", 0.8),
    ("dear homeowner", 1.0),
    ("dear beneficiary", 1.0),
    ("guaranteed", 0.5),
    ("order form", 0.8),
    ("per minute", 0.6),
    ("monthly fee", 0.6),
    ("life insurance", 0.8),
    ("as low as", 0.6),
    ("visit our web", 0.6),
    ("money order", 0.8),
    ("testimonials", 0.8),
    ("why pay", 0.8),
    ("you deserve", 0.6),
    ("email addresses", 0.6),
    ("all natural", 0.6),
    ("buy direct", 0.6),
    ("check or money order", 0.6),
    ("direct email", 0.6),
    ("free access", 0.6),
    ("free consultation", 0.6),
    ("free membership", 0.6),
    ("free money", 0.6),
    ("get out of debt", 0.6),
    ("great offer", 0.6),
    ("money making", 0.6),
    ("no hidden", 0.6),
    ("no questions asked", 0.6),
    ("online marketing", 0.6),
    ("we honor", 0.6),
    ("what are you waiting for", 0.6),
    ("get a free", 0.6),
    ("free of charge", 0.6),
    ("no risk", 0.6),
    ("debt consolidation", 0.6),
    ("credit rating", 0.6),
    ("bad credit", 0.6),
    ("home loan", 0.6),
    ("increase sales", 0.6),
    ("million email", 0.6),
    ("e-mail marketing", 0.6),
    ("bulk e-mail", 0.6),
    ("fresh addresses", 0.6),
];

const REMOVE_PHRASES: &[&str] = &[
    "to be removed",
    "to remove yourself",
    "remove in the subject",
    "remove\" in the subject",
    "with remove in",
    "removed from our list",
    "removed from this list",
    "removed from our mailing",
    "removal instructions",
    "to unsubscribe from this mailing, reply",
    "opt-out",
    "opt out",
];

const COMPLIANCE_PHRASES: &[&str] = &[
    "this is not spam",
    "this is not a spam",
    "not unsolicited",
    "bill s.1618",
    "s. 1618",
    "section 301",
    "in compliance with",
    "you are receiving this",
    "you received this email because",
    "you have received this",
    "if you no longer wish",
    "if you wish to be removed",
];

const ADVANCE_FEE_PHRASES: &[&str] = &[
    "next of kin",
    "beneficiary",
    "wire transfer",
    "bank account",
    "million united states dollars",
    "million us dollars",
    "(usd",
    "us$",
    "strictly confidential",
    "foreign partner",
    "late husband",
    "transfer of the fund",
    "100% safe",
    "bitcoin",
    "btc wallet",
    "business proposal",
    "reply only to",
    "permit me to",
    "do not know you",
    "blind carbon copy",
    "late father",
    "foreign account",
    "crude oil",
    "lottery",
    "claims agent",
    "confidential business",
    "god bless",
    "winning number",
    "ticket number",
    "lucky number",
    "award notification",
    "prize award",
    "lump sum",
    "urgent business",
    "business assistance",
    "your assistance",
    "million dollars",
    "fund transfer",
    "transfer the fund",
    "security company",
    "diplomatic",
];

/// Freemail providers, and the domains their own outbound relays are named under: mail that
/// claims one of these senders passed through one of those hosts.
const FREEMAIL_RELAYS: &[(&[&str], &[&str])] = &[
    (&["gmail.com", "googlemail.com"], &["google.com", "gmail.com", "googlemail.com"]),
    (
        &["hotmail.com", "hotmail.co.uk", "hotmail.fr", "hotmail.de", "outlook.com", "live.com", "msn.com"],
        &["hotmail.com", "outlook.com", "live.com", "msn.com", "microsoft.com"],
    ),
    (
        &["yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "ymail.com", "rocketmail.com"],
        &["yahoo.com", "yahoo.net", "yahoodns.net", "yahoo.co.uk", "yahoo.fr", "yahoo.de"],
    ),
    (&["aol.com", "aim.com"], &["aol.com", "aol.net", "aim.com", "yahoo.com", "yahoodns.net"]),
    (&["icloud.com", "me.com", "mac.com"], &["apple.com", "icloud.com", "me.com", "mac.com"]),
    (&["gmx.com", "gmx.net", "gmx.de", "web.de"], &["gmx.net", "gmx.com", "gmx.de", "web.de"]),
    (&["mail.ru"], &["mail.ru"]),
    (&["yandex.ru", "yandex.com"], &["yandex.net", "yandex.ru", "yandex.com"]),
    (&["excite.com"], &["excite.com"]),
    (&["lycos.com"], &["lycos.com"]),
    (&["juno.com"], &["juno.com"]),
    (&["netscape.net"], &["netscape.net", "aol.com"]),
    (&["earthlink.net"], &["earthlink.net"]),
    (&["rediffmail.com"], &["rediffmail.com", "rediff.com"]),
    (&["mail.com", "email.com", "usa.net"], &["mail.com", "email.com", "usa.net"]),
];

/// Words after "Dear …" that mean the sender does not know the recipient's name.
const GENERIC_SALUTATIONS: &[&str] = &[
    "friend",
    "sir/madam",
    "sir / madam",
    "sir or madam",
    "sir",
    "madam",
    "valued customer",
    "customer",
    "member",
    "user",
    "account holder",
    "beneficiary",
    "winner",
    "email user",
    "e-mail user",
    "webmail user",
    "recipient",
    "homeowner",
    "business owner",
    "internet user",
    "shopper",
    "investor",
];

const PHARMA_PHRASES: &[&str] =
    &["viagra", "cialis", "prescription", "pharmacy", "vicodin", "xanax", "herbal", "penis", "enlarge"];

const PHISH_PHRASES: &[&str] = &[
    "verify your account",
    "confirm your account",
    "account has been suspended",
    "account will be suspended",
    "account suspended",
    "update your account",
    "update your information",
    "unusual activity",
    "verify your identity",
    "confirm your identity",
    "your password will expire",
    "login to your account",
    "log in to your account",
];

/// Most phrases in one list.
const MAX_PHRASES: usize = 256;

/// A phrase list's positions grouped by first byte, built at compile time: the phrases
/// starting with byte `b` are `order[start[b]..start[b + 1]]`. `pairs` has a bit for each
/// pair of bytes some phrase starts with (every pair after the byte of a one-byte phrase) and
/// `singles` one for each one-byte phrase: most positions of a text start no phrase's first
/// two bytes, and are passed over with one bit test.
struct PhraseIndex<const N: usize = MAX_PHRASES> {
    start: [u16; 257],
    order: [u16; N],
    pairs: [u64; 1024],
    singles: [u64; 4],
}

impl<const N: usize> PhraseIndex<N> {
    /// Whether some phrase may start at `at` in `bytes` (by its first two bytes).
    #[inline]
    fn may_start(&self, bytes: &[u8], at: usize) -> bool {
        let b = usize::from(bytes[at]);
        match bytes.get(at + 1) {
            Some(&c) => {
                let pair = b << 8 | usize::from(c);
                self.pairs[pair >> 6] & (1 << (pair & 63)) != 0
            }
            None => self.singles[b >> 6] & (1 << (b & 63)) != 0,
        }
    }
}

/// First and second byte of each phrase (-1 where there is none).
const fn prefixes<const N: usize>(list: &[&str]) -> [(i16, i16); N] {
    assert!(list.len() <= N, "phrase list too long");
    let mut prefix = [(-1i16, -1i16); N];
    let mut i = 0;
    while i < list.len() {
        let bytes = list[i].as_bytes();
        if !bytes.is_empty() {
            prefix[i].0 = bytes[0] as i16;
        }
        if bytes.len() > 1 {
            prefix[i].1 = bytes[1] as i16;
        }
        i += 1;
    }
    prefix
}

const fn build_index<const N: usize>(prefix: [(i16, i16); N]) -> PhraseIndex<N> {
    let mut start = [0u16; 257];
    let mut pairs = [0u64; 1024];
    let mut singles = [0u64; 4];
    let mut i = 0;
    while i < N {
        let (first, second) = prefix[i];
        if first >= 0 {
            start[first as usize + 1] += 1;
            let b = first as usize;
            if second >= 0 {
                let pair = b << 8 | second as usize;
                pairs[pair >> 6] |= 1 << (pair & 63);
            } else {
                singles[b >> 6] |= 1 << (b & 63);
                let mut c = 0;
                while c < 256 {
                    let pair = b << 8 | c;
                    pairs[pair >> 6] |= 1 << (pair & 63);
                    c += 1;
                }
            }
        }
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        start[b + 1] += start[b];
        b += 1;
    }
    let mut next = start;
    let mut order = [0u16; N];
    i = 0;
    while i < N {
        let first = prefix[i].0;
        if first >= 0 {
            let b = first as usize;
            order[next[b] as usize] = i as u16;
            next[b] += 1;
        }
        i += 1;
    }
    PhraseIndex { start, order, pairs, singles }
}

const fn index(list: &[&str]) -> PhraseIndex {
    build_index(prefixes(list))
}

static SUBJ_MONEY_INDEX: PhraseIndex = index(SUBJ_MONEY);
static SUBJ_URGENCY_INDEX: PhraseIndex = index(SUBJ_URGENCY);
const TOLL_FREE: &[&str] =
    &["1-800-", "1-888-", "1-877-", "1-866-", "1 800 ", "1 888 ", "(800)", "(888)", "(877)", "(866)"];

/// The phrase lists searched in a message's text, all in one pass over it: the scored spam
/// phrases, then these, in this order.
const BODY_LISTS: [&[&str]; 6] =
    [REMOVE_PHRASES, TOLL_FREE, COMPLIANCE_PHRASES, ADVANCE_FEE_PHRASES, PHARMA_PHRASES, PHISH_PHRASES];
/// Each list's number in [`BodyHits`] (0 is the scored spam phrases).
const REMOVE_LIST: usize = 1;
const TOLL_FREE_LIST: usize = 2;
const COMPLIANCE_LIST: usize = 3;
const ADVANCE_FEE_LIST: usize = 4;
const PHARMA_LIST: usize = 5;
const PHISH_LIST: usize = 6;
/// Most phrases in all body lists together.
const MAX_BODY_PHRASES: usize = 512;

/// Every body phrase in one array (the scored spam phrases first), and where each list
/// starts in it (the last entry: where they end).
struct BodyPhrases {
    phrases: [&'static str; MAX_BODY_PHRASES],
    starts: [usize; BODY_LISTS.len() + 2],
}

const fn body_phrases() -> BodyPhrases {
    let mut phrases = [""; MAX_BODY_PHRASES];
    let mut starts = [0usize; BODY_LISTS.len() + 2];
    let mut n = 0;
    while n < SPAM_PHRASES.len() {
        phrases[n] = SPAM_PHRASES[n].0;
        n += 1;
    }
    let mut list = 0;
    while list < BODY_LISTS.len() {
        starts[list + 1] = n;
        let mut i = 0;
        while i < BODY_LISTS[list].len() {
            assert!(n < MAX_BODY_PHRASES, "body phrase lists too long");
            phrases[n] = BODY_LISTS[list][i];
            n += 1;
            i += 1;
        }
        list += 1;
    }
    starts[BODY_LISTS.len() + 1] = n;
    BodyPhrases { phrases, starts }
}

const BODY: BodyPhrases = body_phrases();
static BODY_PHRASES: BodyPhrases = BODY;
// The unused tail of the array is empty phrases, which the index leaves out.
static BODY_INDEX: PhraseIndex<MAX_BODY_PHRASES> = build_index(prefixes(&BODY.phrases));

/// Which body phrases occur in a (lower-cased) text, list by list.
struct BodyHits {
    found: Vec<bool>,
}

impl BodyHits {
    fn search(lower: &str) -> Self {
        let count = BODY_PHRASES.starts[BODY_LISTS.len() + 1];
        Self { found: present(lower, count, &BODY_INDEX, |i| BODY_PHRASES.phrases[i]) }
    }

    /// The hits of list `n` (0: the scored spam phrases, then BODY_LISTS), by position.
    fn list(&self, n: usize) -> &[bool] {
        &self.found[BODY_PHRASES.starts[n]..BODY_PHRASES.starts[n + 1]]
    }

    /// The phrases of list `n` found.
    fn phrases(&self, n: usize) -> Vec<String> {
        found_phrases(&BODY_PHRASES.phrases[BODY_PHRASES.starts[n]..BODY_PHRASES.starts[n + 1]], self.list(n))
    }
}

/// The phrases whose `hits` entry is set.
fn found_phrases(phrases: &[&str], hits: &[bool]) -> Vec<String> {
    phrases.iter().zip(hits).filter(|(_, hit)| **hit).map(|(p, _)| p.to_string()).collect()
}

fn count_phrases(haystack: &str, phrases: &[&str], index: &PhraseIndex) -> Vec<String> {
    found_phrases(phrases, &present(haystack, phrases.len(), index, |i| phrases[i]))
}

/// Which of the `count` phrases (`phrase(i)`, indexed by `index`) occur in `haystack`:
/// `str::contains` for each, in one pass over the haystack instead of one per phrase, each
/// position compared only with the phrases that start with its byte. The positions are
/// tested eight at a time against the index of first byte pairs (independent loads, one
/// branch per eight: most positions of any text start no phrase), then the candidates one
/// by one.
fn present<'p, const N: usize>(
    haystack: &str,
    count: usize,
    index: &PhraseIndex<N>,
    phrase: impl Fn(usize) -> &'p str,
) -> Vec<bool> {
    let mut found = vec![false; count];
    let mut missing = usize::from(index.start[256]);
    let bytes = haystack.as_bytes();
    let mut check = |at: usize, missing: &mut usize| {
        let b = usize::from(bytes[at]);
        let (from, to) = (usize::from(index.start[b]), usize::from(index.start[b + 1]));
        let rest = &bytes[at..];
        for &i in &index.order[from..to] {
            let i = usize::from(i);
            if !found[i] && rest.starts_with(phrase(i).as_bytes()) {
                found[i] = true;
                *missing -= 1;
            }
        }
    };
    let mut at = 0;
    // Eight positions need nine bytes: their pairs.
    while missing > 0 && at + 9 <= bytes.len() {
        let window: &[u8; 9] = bytes[at..at + 9].try_into().unwrap_or(&[0; 9]);
        let mut candidates = 0u32;
        for k in 0..8 {
            let pair = usize::from(window[k]) << 8 | usize::from(window[k + 1]);
            let bit = (index.pairs[pair >> 6] >> (pair & 63)) & 1;
            candidates |= (bit as u32) << k;
        }
        while candidates != 0 && missing > 0 {
            check(at + candidates.trailing_zeros() as usize, &mut missing);
            candidates &= candidates - 1;
        }
        at += 8;
    }
    while missing > 0 && at < bytes.len() {
        if index.may_start(bytes, at) {
            check(at, &mut missing);
        }
        at += 1;
    }
    found
}

fn is_ip_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok()
        || (host.starts_with("0x") && host.len() > 3)
        || (!host.is_empty() && host.bytes().all(|b| b.is_ascii_digit()) && host.len() >= 8)
}

/// Looks like a domain or URL as written for humans: `www.bank.com`, `https://bank.com/x`.
fn displayed_domain(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    if text.contains(' ') || !text.contains('.') {
        return None;
    }
    let host = if text.starts_with("http://") || text.starts_with("https://") {
        url_host(&text)?
    } else if text.starts_with("www.") {
        text.split(['/', '?']).next()?.to_string()
    } else {
        return None;
    };
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| l.is_empty())
        || !labels.last()?.chars().all(|c| c.is_ascii_alphabetic())
    {
        return None;
    }
    Some(host)
}

fn letters_caps_ratio(text: &str) -> (usize, f64) {
    // ASCII (most of any text) eight bytes at a time, without the Unicode tables.
    let (mut letters, mut caps) = crate::ascii::ascii_letters_and_capitals(text.as_bytes());
    if !text.is_ascii() {
        for c in text.chars().filter(|c| !c.is_ascii()) {
            letters += usize::from(c.is_alphabetic());
            caps += usize::from(c.is_uppercase());
        }
    }
    (letters, if letters == 0 { 0.0 } else { caps as f64 / letters as f64 })
}

/// RFC 5322 requires a zone: a numeric offset, or one of the obsolete names.
fn has_timezone(date: &str) -> bool {
    date.split(|c: char| c.is_whitespace() || c == '(' || c == ')').any(|token| {
        let numeric = token.len() == 5
            && (token.starts_with('+') || token.starts_with('-'))
            && token[1..].bytes().all(|b| b.is_ascii_digit());
        numeric
            || matches!(
                token.to_ascii_uppercase().as_str(),
                "GMT" | "UT" | "UTC" | "Z" | "EST" | "EDT" | "CST" | "CDT" | "MST" | "MDT" | "PST" | "PDT"
            )
    })
}

/// "remove" written as an instruction: near a subject line, a reply, an address or a list.
fn remove_instruction(lower: &str) -> Option<String> {
    for at in memmem::find_iter(lower.as_bytes(), "remove") {
        let start = lower.floor_char_boundary(at.saturating_sub(80));
        let end = lower.ceil_char_boundary((at + 120).min(lower.len()));
        let window = &lower[start..end];
        let cue = ["subject", "reply", "mailto", "list", "e-mail", "email", "click", "send"]
            .into_iter()
            .find(|cue| window.contains(cue));
        if let Some(cue) = cue {
            return Some(format!("remove … {cue}"));
        }
    }
    None
}

fn extension(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches(['.', ' ']).to_ascii_lowercase();
    name.rsplit_once('.').map(|(_, e)| e.to_string())
}

/// Run every rule.
pub fn evaluate(input: &Input) -> Vec<Hit> {
    let mut hits = Hits(Vec::new());
    let html_text = input.html.as_deref().map(html_to_text).unwrap_or_default();
    let text = input.text.as_deref().unwrap_or_default();
    let visible = if text.trim().is_empty() { html_text.as_str() } else { text };
    let visible_lower = visible.to_ascii_lowercase();

    let gtube = memmem::Finder::new(GTUBE);
    if gtube.find(text.as_bytes()).is_some()
        || input.html.as_deref().is_some_and(|h| gtube.find(h.as_bytes()).is_some())
    {
        hits.add("GTUBE", 1000.0, "GTUBE test signature".to_string());
    }

    header_rules(input, &mut hits);
    subject_rules(input, &mut hits);
    html_rules(input, &html_text, &mut hits);
    link_rules(input, text, &mut hits);
    body_rules(input, visible, &visible_lower, &mut hits);
    attachment_rules(input, &mut hits);
    hits.0
}

fn header_rules(input: &Input, hits: &mut Hits) {
    match input.date {
        None if !input.has_header("Date") => hits.add("MISSING_DATE", 1.5, None),
        None => hits.add("MISSING_DATE", 1.2, "unparseable Date".to_string()),
        Some(date) => {
            let raw_date = input.header("Date").unwrap_or("");
            if !has_timezone(raw_date) {
                hits.add("DATE_NO_TIMEZONE", 2.0, raw_date.to_string());
            }
            // Compare with the newest Received: the time our side of the world saw it.
            let received =
                input.all("Received").find_map(|r| r.rsplit_once(';').and_then(|(_, d)| parse_date(d)));
            if let Some(received) = received {
                if date > received + 12 * 3600 {
                    hits.add(
                        "DATE_IN_FUTURE",
                        2.0,
                        format!("{}h ahead of Received", (date - received) / 3600),
                    );
                } else if date < received - 96 * 3600 {
                    hits.add("DATE_IN_PAST", 1.4, format!("{}h behind Received", (received - date) / 3600));
                }
            }
        }
    }
    match &input.message_id {
        None => hits.add("MISSING_MESSAGE_ID", 1.0, None),
        Some(id) if !id.contains('@') || id.contains(' ') => hits.add("INVALID_MESSAGE_ID", 1.5, id.clone()),
        // Mail software builds identifiers from times, counters and hashes, so they carry
        // digits. Letters alone are a bulk tool's imitation.
        Some(id) => {
            let local = id.trim_matches(['<', '>']).split('@').next().unwrap_or("");
            if !local.is_empty() && local.bytes().all(|b| b.is_ascii_alphabetic()) {
                hits.add("MSGID_LETTERS_ONLY", 1.0, id.clone());
            }
        }
    }
    let from = input.from.first();
    if from.is_some_and(|m| m.address.is_some() && m.name.as_deref().is_none_or(|n| n.trim().is_empty())) {
        hits.add("FROM_NO_DISPLAY_NAME", 0.6, None);
    }
    match from.and_then(|m| m.address.as_deref()) {
        None => hits.add("MISSING_FROM", 1.5, None),
        Some(address) => {
            let domain = address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
            if let Some(name) = from.and_then(|m| m.name.as_deref()) {
                let lower = name.to_ascii_lowercase();
                let shown = lower
                    .split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '"' | '\''))
                    .filter_map(|w| w.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_string()))
                    .find(|d| d.contains('.'));
                if let Some(shown) = shown
                    && base_domain(&shown) != base_domain(&domain)
                {
                    hits.add("FROM_DISPLAY_SPOOF", 2.5, format!("shows {shown}, sends from {domain}"));
                }
                let (letters, caps) = letters_caps_ratio(name);
                if letters >= 6 && caps > 0.9 && name.contains(' ') {
                    hits.add("FROM_NAME_ALL_CAPS", 1.5, name.to_string());
                }
            }
            if let Some(reply) = input.reply_to.first().and_then(|m| m.address.as_deref()) {
                let reply_domain =
                    reply.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
                // Replies go to a free mailbox that is not the sender's own.
                if FREEMAIL.contains(&reply_domain.as_str()) && !reply.eq_ignore_ascii_case(address) {
                    hits.add("REPLYTO_FREEMAIL_DIFFERS", 2.0, format!("Reply-To {reply}, From {address}"));
                }
            }
        }
    }
    if !input.has_header("To") && !input.has_header("Cc") {
        hits.add("MISSING_TO", 0.8, None);
    } else if input.header("To").is_some_and(|to| to.to_ascii_lowercase().contains("undisclosed"))
        || input.recipients.is_empty()
    {
        hits.add("TO_UNDISCLOSED", 2.0, None);
    }
    if let Some(local) =
        input.from.first().and_then(|m| m.address.as_deref()).and_then(|a| a.rsplit_once('@')).map(|(l, _)| l)
    {
        // A name followed by a long run of digits: "james5293102", "offers_8452970".
        let letters = local.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let rest = local[letters..].trim_start_matches('_');
        if letters >= 2 && rest.len() >= 6 && rest.bytes().all(|b| b.is_ascii_digit()) {
            hits.add("FROM_LOCAL_DIGITS", 1.2, local.to_string());
        }
    }
    let mut domains: Vec<String> = input
        .recipients
        .iter()
        .filter_map(|m| m.address.as_deref()?.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        .collect();
    domains.sort();
    domains.dedup();
    if input.recipients.len() >= 8 && domains.len() >= 5 {
        hits.add(
            "MANY_VISIBLE_RECIPIENTS",
            2.0,
            format!("{} recipients in {} domains", input.recipients.len(), domains.len()),
        );
    }
    let priority = input.header("X-Priority").unwrap_or("").trim().starts_with('1')
        || input.header("X-MSMail-Priority").is_some_and(|p| p.eq_ignore_ascii_case("high"));
    if priority {
        hits.add("PRIORITY_HIGH", 1.5, None);
    }
    // Outlook writes X-MSMail-Priority; other software that copies the header to look like
    // Outlook usually forgets the matching X-Mailer.
    let mailer = input.header("X-Mailer").unwrap_or("").to_ascii_lowercase();
    if input.has_header("X-MSMail-Priority") && !mailer.contains("outlook") && !mailer.contains("microsoft") {
        hits.add("MSMAIL_PRIORITY_NOT_OUTLOOK", 1.5, input.header("X-Mailer").map(str::to_string));
    }
    if let Some(mailer) = input.header("X-Mailer").filter(|m| random_token(m.trim())) {
        hits.add("X_MAILER_RANDOM", 1.5, mailer.trim().to_string());
    }
    if input.has_header("Content-Type") && !input.has_header("MIME-Version") {
        hits.add("MISSING_MIME_VERSION", 0.5, None);
    }
    // "Received: from 192.0.2.1 (...)": a client that greeted with a bare IP address.
    let bare_ip_helo = input.all("Received").any(|r| {
        r.trim_start()
            .strip_prefix("from ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|helo| helo.parse::<std::net::Ipv4Addr>().is_ok())
    });
    if bare_ip_helo {
        hits.add("RCVD_HELO_BARE_IP", 1.5, None);
    }
    if let Some(domain) = forged_freemail(input) {
        hits.add("FORGED_FREEMAIL_RCVD", 2.0, domain);
    }
    if let Some(zone) = absurd_timezone(input.header("Date")) {
        hits.add("DATE_TZ_ABSURD", 1.5, zone);
    }
    // Raw bytes of a legacy charset in the header block: RFC 5322 wants encoded words there
    // (UTF-8 is allowed with SMTPUTF8). A cut in the middle of a character is not a fault.
    if matches!(std::str::from_utf8(&input.raw_head), Err(e) if e.error_len().is_some()) {
        hits.add("HEADER_8BIT", 1.0, None);
    }
    if undeclared_8bit(input) {
        hits.add("BODY_8BIT_UNDECLARED", 1.0, None);
    }
}

/// A From address at a freemail provider on mail none of whose vouched-for hops is that
/// provider's: the sender's own server or a botnet speaking for it. Mailing lists re-send
/// their members' mail from their own servers, so they are left alone.
fn forged_freemail(input: &Input) -> Option<String> {
    let address = input.from.first()?.address.as_deref()?;
    let domain = address.rsplit_once('@')?.1.trim_end_matches('.').to_ascii_lowercase();
    let (_, relays) = FREEMAIL_RELAYS.iter().find(|(domains, _)| domains.contains(&domain.as_str()))?;
    if ["List-Id", "List-Unsubscribe", "List-Post", "Mailing-List"].iter().any(|h| input.has_header(h)) {
        return None;
    }
    let mut hosts = vouched_hosts(input.all("Received"));
    hosts.extend(input.client_rdns.as_deref().and_then(host_name));
    if hosts.is_empty() {
        return None;
    }
    let vouched = hosts.iter().any(|host| {
        relays.iter().any(|relay| {
            host.strip_suffix(relay).is_some_and(|prefix| prefix.is_empty() || prefix.ends_with('.'))
        })
    });
    (!vouched).then_some(domain)
}

/// Host names a Received chain vouches for: each hop's own name (`by HOST`) and the reverse
/// DNS name it found for its client (`from HELO (RDNS [IP])`) — never the HELO name, which
/// the client chose itself.
fn vouched_hosts<'a>(received: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut hosts = Vec::new();
    for line in received {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            let next = words.get(i + 1).copied().unwrap_or("");
            if word.eq_ignore_ascii_case("by") {
                hosts.extend(host_name(next));
            } else if let Some(inner) = word.strip_prefix('(')
                && next.starts_with('[')
            {
                let inner = inner.rsplit('@').next().unwrap_or(inner);
                hosts.extend(host_name(inner));
            }
        }
    }
    hosts
}

/// `token` as a lower-case host name, if it is one (dotted, with an alphabetic top label).
fn host_name(token: &str) -> Option<String> {
    let host = token.trim_end_matches([';', ')', ',']).trim_end_matches('.').to_ascii_lowercase();
    let top = host.rsplit('.').next()?;
    let valid = host.contains('.')
        && top.len() >= 2
        && top.bytes().all(|b| b.is_ascii_alphabetic())
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(host)
}

/// A mailer name that is one long run of mixed-case letters and digits: real software names
/// itself with words and versions ("Outlook 16.0", "Thunderbird/115.3"), bulk tools that
/// vary the header per message write noise.
fn random_token(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.len() >= 10
        && bytes.iter().all(u8::is_ascii_alphanumeric)
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes.iter().any(u8::is_ascii_uppercase)
        && (bytes.iter().any(u8::is_ascii_digit) || value.len() >= 14)
}

/// A numeric zone no place on Earth uses (beyond ±14 hours, or 60+ minutes): written by
/// software that computes its offset wrongly, which mail clients do not.
fn absurd_timezone(date: Option<&str>) -> Option<String> {
    let date = date?;
    let date = date.split('(').next().unwrap_or(date);
    let zone = date.split_whitespace().last()?;
    let digits = zone.strip_prefix(['+', '-'])?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: u32 = digits[..2].parse().ok()?;
    let minutes: u32 = digits[2..].parse().ok()?;
    (hours > 14 || minutes >= 60).then(|| zone.to_string())
}

/// A single-part message declared US-ASCII (or with no charset), not transfer-encoded, whose
/// body is full of 8-bit bytes: text in some other charset sent without saying which.
fn undeclared_8bit(input: &Input) -> bool {
    let content_type = input.header("Content-Type").unwrap_or("").to_ascii_lowercase();
    if content_type.starts_with("multipart/") || content_type.starts_with("message/") {
        return false;
    }
    let charset = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("charset="))
        .map(|c| c.trim_matches(['"', '\'', ' ']));
    if !matches!(charset, None | Some("us-ascii" | "ascii")) {
        return false;
    }
    let encoding = input.header("Content-Transfer-Encoding").unwrap_or("").trim().to_ascii_lowercase();
    if encoding == "base64" || encoding == "quoted-printable" {
        return false;
    }
    // A stray accented name is sloppiness; a body that is mostly 8-bit is another language.
    let high = crate::ascii::count_8bit(&input.raw_body);
    high > 20 && high * 10 > input.raw_body.len()
}

/// A long run of random lower-case letters standing alone in the text: noise appended to
/// make every copy of a bulk message different, so checksum-based filters miss it. Words in
/// links and addresses do not count.
/// Shortest random word taken for a hash buster.
const HASHBUSTER_LEN: usize = 22;

/// A long word of random lower-case letters: a token that makes each copy of a bulk message
/// differ (a "hash buster").
fn hashbuster(visible: &str) -> Option<String> {
    // A candidate is a run of at least HASHBUSTER_LEN lower-case ASCII letters: most texts
    // have none, and are passed over in one pass over their bytes.
    if !crate::ascii::has_lowercase_run(visible.as_bytes(), HASHBUSTER_LEN) {
        return None;
    }
    visible
        .split_whitespace()
        .filter(|w| !w.contains("://") && !w.contains('@') && !w.starts_with("www."))
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '"' | '\'' | '(' | ')'))
        })
        .find(|w| {
            w.len() >= HASHBUSTER_LEN && w.bytes().all(|b| b.is_ascii_lowercase()) && unpronounceable(w)
        })
        .map(str::to_string)
}

/// Five or more consonants in a row: random letters, not words run together.
fn unpronounceable(word: &str) -> bool {
    let mut run = 0;
    for b in word.bytes() {
        run = if b"aeiouy".contains(&b) { 0 } else { run + 1 };
        if run >= 5 {
            return true;
        }
    }
    false
}

/// "Dear friend", "Hello valued customer": a greeting for someone whose name is unknown.
fn generic_salutation(lower: &str) -> Option<String> {
    let head = &lower[..lower.floor_char_boundary(3000)];
    for line in head.lines() {
        let line = line.trim_start_matches(|c: char| !c.is_alphanumeric());
        let greeting = ["dear", "hello", "hi", "greetings"]
            .iter()
            .find_map(|g| line.strip_prefix(g).filter(|rest| rest.starts_with([',', ' ', '\t'])));
        let Some(rest) = greeting else { continue };
        let rest = rest.trim_start_matches([',', ' ', '\t']);
        for noun in GENERIC_SALUTATIONS {
            if let Some(after) = rest.strip_prefix(noun) {
                // The greeting ends there: "Dear friend," but not "Dear friends of the project".
                let after = after.strip_prefix('s').unwrap_or(after).trim_start();
                if after.chars().next().is_none_or(|c| matches!(c, ',' | '!' | '.' | ':' | ';')) {
                    return Some(line.chars().take(40).collect());
                }
            }
        }
    }
    None
}

fn subject_rules(input: &Input, hits: &mut Hits) {
    let Some(subject) = input.subject.as_deref() else { return };
    let lower = subject.to_ascii_lowercase();
    let (letters, caps) = letters_caps_ratio(subject);
    if letters >= 8 && caps >= 0.8 {
        hits.add("SUBJ_ALL_CAPS", 2.0, subject.to_string());
    }
    if subject.contains("!!") || (subject.contains('!') && subject.contains('$')) {
        hits.add("SUBJ_EXCLAIM", 1.0, None);
    } else if subject.trim_end().ends_with('!') {
        hits.add("SUBJ_EXCLAIM", 0.4, None);
    }
    let money = count_phrases(&lower, SUBJ_MONEY, &SUBJ_MONEY_INDEX);
    let dollar = lower.contains('$') && lower.chars().any(|c| c.is_ascii_digit());
    if !money.is_empty() || dollar {
        let n = money.len() + usize::from(dollar);
        hits.add("SUBJ_MONEY", (1.0 + 0.5 * (n as f64 - 1.0)).min(2.0), money.join(","));
    }
    let urgency = count_phrases(&lower, SUBJ_URGENCY, &SUBJ_URGENCY_INDEX);
    if !urgency.is_empty() {
        hits.add("SUBJ_URGENCY", 1.5, urgency.join(","));
    }
    // A tracking tag appended after a run of spaces, or a bare trailing token mixing letters
    // and digits: "Great offer        28374", "Hello [ID:7x9q2]".
    let trimmed = subject.trim_end();
    if let Some((head, tail)) = trimmed.rsplit_once(char::is_whitespace) {
        let tail = tail.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | '#' | '-'));
        let spaced = head.ends_with("   ");
        // Hyphens join the pieces of longer tracking tokens ("7126kyiK0-697yFCQ-24").
        let joined = tail.len() >= 12 && tail.contains('-');
        let tokenish = tail.len() >= 5
            && tail.chars().any(|c| c.is_ascii_digit())
            && tail.chars().all(|c| c.is_ascii_alphanumeric() || (joined && c == '-'))
            && tail.chars().any(|c| c.is_ascii_alphabetic())
            && !tail.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if (spaced && tail.len() >= 3) || tokenish {
            hits.add("SUBJ_UNIQUE_ID", 2.5, tail.to_string());
        }
    }
    // A run of spaces inside the subject: padding that pushes a tracking tag out of view.
    if subject.trim().contains("     ") {
        hits.add("SUBJ_PADDED", 1.5, None);
    }
    if subject.contains('%') {
        hits.add("SUBJ_PERCENT", 0.8, None);
    }
    if lower.starts_with("adv") && lower[3..].starts_with([':', ' ', '-']) {
        hits.add("SUBJ_ADV", 3.0, None);
    }
}

fn html_rules(input: &Input, html_text: &str, hits: &mut Hits) {
    let Some(html) = input.html.as_deref() else { return };
    let lower = html.to_ascii_lowercase();
    if input.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
        hits.add("HTML_ONLY", 0.3, None);
    }
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    let hidden = ["display:none", "visibility:hidden", "font-size:0px", "font-size:0;", "font-size:1px"]
        .iter()
        .any(|p| compact.contains(p))
        || (compact.contains("color=\"#ffffff\"")
            || compact.contains("color=#ffffff")
            || compact.contains("color:#ffffff"))
            && !compact.contains("bgcolor=\"#000")
            && !compact.contains("background-color:#000");
    if hidden {
        hits.add("HTML_HIDDEN_TEXT", 0.3, None);
    }
    if compact.contains("<fontsize=1")
        || compact.contains("<fontsize=\"1\"")
        || compact.contains("font-size:2px")
    {
        hits.add("HTML_TINY_FONT", 0.6, None);
    }
    if [
        "<fontsize=+3",
        "<fontsize=\"+3\"",
        "<fontsize=\"6\"",
        "<fontsize=6",
        "<fontsize=\"7\"",
        "<fontsize=7",
        "<fontsize=+4",
    ]
    .iter()
    .any(|p| compact.contains(p))
    {
        hits.add("HTML_BIG_FONT", 1.0, None);
    }
    let images = lower.matches("<img").count();
    if images >= 1 && html_text.len() < 300 {
        hits.add("HTML_IMAGE_HEAVY", 1.2, format!("{images} images, {} characters of text", html_text.len()));
    }
    if lower.contains("<form") || lower.contains("<script") || lower.contains("<iframe") {
        hits.add("HTML_SCRIPT_FORM", 0.3, None);
    }
}

fn link_rules(input: &Input, text: &str, hits: &mut Hits) {
    let mut links: Vec<Link> = input.html.as_deref().map(html_links).unwrap_or_default();
    links.extend(text_urls(text).into_iter().map(|url| Link { url, text: String::new() }));
    let hosts: Vec<String> = links.iter().filter_map(|l| url_host(&l.url)).collect();
    let mut distinct = hosts.clone();
    distinct.sort();
    distinct.dedup();
    if links.len() > 25 {
        hits.add("LINKS_MANY", 0.1, format!("{} links", links.len()));
    }
    if let Some(ip) = hosts.iter().find(|h| is_ip_host(h)) {
        hits.add("LINK_IP_LITERAL", 2.5, ip.clone());
    }
    let obfuscated = links.iter().find(|l| {
        let authority = l
            .url
            .strip_prefix("http://")
            .or_else(|| l.url.strip_prefix("https://"))
            .map(|r| r.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or("");
        authority.contains('@') || authority.contains('%') || authority.contains("&#")
    });
    if let Some(link) = obfuscated {
        hits.add("LINK_OBFUSCATED", 2.0, link.url.clone());
    }
    let mismatch = links.iter().find_map(|l| {
        let shown = displayed_domain(&l.text)?;
        let real = url_host(&l.url)?;
        (base_domain(&shown) != base_domain(&real)).then(|| format!("shows {shown}, goes to {real}"))
    });
    if let Some(detail) = mismatch {
        hits.add("LINK_TEXT_MISMATCH", 1.5, detail);
    }
    if let Some(short) = distinct.iter().find(|h| SHORTENERS.contains(&h.as_str())) {
        hits.add("LINK_SHORTENER", 0.5, short.clone());
    }
}

fn body_rules(input: &Input, visible: &str, lower: &str, hits: &mut Hits) {
    let body = BodyHits::search(lower);
    let found: Vec<(&str, f64)> =
        SPAM_PHRASES.iter().zip(body.list(0)).filter(|(_, hit)| **hit).map(|(phrase, _)| *phrase).collect();
    if !found.is_empty() {
        let total: f64 = found.iter().map(|(_, s)| s).sum();
        let names: Vec<&str> = found.iter().map(|(p, _)| *p).collect();
        hits.add("BODY_SPAM_PHRASES", total.min(3.5), names.join(","));
    }
    let remove = body.phrases(REMOVE_LIST);
    if let Some(detail) = remove.first().cloned().or_else(|| remove_instruction(lower)) {
        // Bulk mail that also offers the standard one-click way out (RFC 2369/8058 List-
        // Unsubscribe, which large receivers require of bulk senders) is less suspicious
        // than removal instructions alone.
        let score = if input.has_header("List-Unsubscribe") { 0.8 } else { 1.7 };
        hits.add("BODY_REMOVE_INSTRUCTIONS", score, detail);
    }
    if let Some(token) = hashbuster(visible) {
        hits.add("BODY_HASHBUSTER", 1.0, token);
    }
    if let Some(number) = body.phrases(TOLL_FREE_LIST).first() {
        hits.add("BODY_TOLL_FREE", 0.8, number.clone());
    }
    let compliance = body.phrases(COMPLIANCE_LIST);
    if !compliance.is_empty() {
        hits.add(
            "BODY_COMPLIANCE_CLAIM",
            (0.4 + 0.4 * compliance.len() as f64).min(1.6),
            compliance.join(","),
        );
    }
    let fee = body.phrases(ADVANCE_FEE_LIST);
    if fee.len() >= 2 {
        hits.add("BODY_ADVANCE_FEE", (0.9 * fee.len() as f64).min(3.5), fee.join(","));
    }
    let pharma = body.phrases(PHARMA_LIST);
    if pharma.len() >= 2 {
        hits.add("BODY_PHARMA", 2.0, pharma.join(","));
    }
    let phish = body.phrases(PHISH_LIST);
    if !phish.is_empty() {
        hits.add("BODY_PHISH_ACCOUNT", 1.5, phish.join(","));
    }
    if let Some(greeting) = generic_salutation(lower) {
        hits.add("BODY_DEAR_GENERIC", 1.0, greeting);
    }
    let (letters, caps) = letters_caps_ratio(visible);
    if letters >= 200 && caps > 0.35 {
        hits.add("BODY_SHOUTING", 1.2, format!("{:.0}% capitals", caps * 100.0));
    }
    if let Some(detail) = exclamation_heavy(visible) {
        hits.add("BODY_EXCLAIM_MANY", 1.5, detail);
    }
    let amounts = visible
        .match_indices('$')
        .filter(|(i, _)| visible[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
        .count();
    if amounts >= 3 {
        hits.add("BODY_MONEY_AMOUNTS", 0.3, format!("{amounts} dollar amounts"));
    }
}

/// Runs of three or more exclamation marks in a text where they are frequent (at least two
/// per thousand characters): the punctuation of sales copy. A single "!!!" in a long
/// newsletter or a thread does not count.
fn exclamation_heavy(visible: &str) -> Option<String> {
    memmem::find(visible.as_bytes(), b"!!!")?;
    let marks = visible.bytes().filter(|&b| b == b'!').count();
    (marks * 1000 >= 2 * visible.len())
        .then(|| format!("{marks} exclamation marks in {} characters", visible.len()))
}

fn attachment_rules(input: &Input, hits: &mut Hits) {
    for (name, content_type) in &input.attachments {
        let Some(name) = name.as_deref() else {
            if content_type.contains("x-msdownload") || content_type.contains("x-dosexec") {
                hits.add("ATTACH_EXECUTABLE", 4.5, content_type.clone());
            }
            continue;
        };
        let lower = name.trim().to_ascii_lowercase();
        let Some(ext) = extension(&lower) else { continue };
        if EXECUTABLE.contains(&ext.as_str()) {
            let inner =
                lower.trim_end_matches(['.', ' ']).rsplit_once('.').and_then(|(stem, _)| extension(stem));
            let disguised = inner.is_some_and(|inner| {
                [
                    "pdf", "doc", "docx", "xls", "xlsx", "jpg", "jpeg", "png", "gif", "txt", "zip", "htm",
                    "html",
                ]
                .contains(&inner.as_str())
            }) || lower.contains("     ");
            if disguised {
                hits.add("ATTACH_DOUBLE_EXTENSION", 5.0, name.to_string());
            } else {
                hits.add("ATTACH_EXECUTABLE", 4.5, name.to_string());
            }
        } else if MACRO_DOCS.contains(&ext.as_str()) {
            hits.add("ATTACH_MACRO_DOCUMENT", 1.5, name.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_phrase_search_agrees_with_contains() {
        let texts = [
            "",
            "act now! limited time offer, click here to unsubscribe",
            "dear friend, i am the next of kin of a late client; 100% free viagra",
            "überweisung — act now, 1-800-555 and (888) ... click here",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "click her",
        ];
        for text in texts {
            let body = BodyHits::search(text);
            let expected: Vec<bool> = SPAM_PHRASES.iter().map(|(p, _)| text.contains(p)).collect();
            assert_eq!(body.list(0), expected, "{text:?}");
            for (n, list) in BODY_LISTS.iter().enumerate() {
                let expected: Vec<bool> = list.iter().map(|p| text.contains(p)).collect();
                assert_eq!(body.list(n + 1), expected, "{text:?}");
                assert_eq!(present(text, list.len(), &index(list), |i| list[i]), expected, "{text:?}");
            }
        }
        let list = ["abd", "ca", "x", "b"];
        assert_eq!(present("abcabd", 4, &index(&list), |i| list[i]), vec![true, true, false, true]);
        // A one-byte phrase as the last byte, a longer one ending there, none at all.
        assert_eq!(present("xcab", 4, &index(&list), |i| list[i]), vec![false, true, true, true]);
        assert_eq!(present("zzabd", 4, &index(&list), |i| list[i]), vec![true, false, false, true]);
        assert_eq!(present("zz", 4, &index(&list), |i| list[i]), vec![false; 4]);
    }

    fn names(input: &Input) -> Vec<&'static str> {
        evaluate(input).into_iter().map(|h| h.name).collect()
    }

    fn mailbox(name: Option<&str>, address: &str) -> Mailbox {
        Mailbox { name: name.map(str::to_string), address: Some(address.to_string()) }
    }

    fn plain() -> Input {
        Input {
            headers: vec![
                ("To".into(), "bob@example.com".into()),
                ("Date".into(), "Thu, 1 Jan 2026 00:00:00 +0000".into()),
                (
                    "Received".into(),
                    "from mx.example.org by mx.example.com; Thu, 1 Jan 2026 00:01:00 +0000".into(),
                ),
            ],
            subject: Some("Lunch on Friday?".into()),
            from: vec![mailbox(Some("Alice Example"), "alice@example.org")],
            recipients: vec![mailbox(None, "bob@example.com")],
            date: Some(1_767_225_600),
            message_id: Some("20260101.abc@example.org".into()),
            text: Some("Shall we meet at noon?".into()),
            ..Input::default()
        }
    }

    #[test]
    fn an_ordinary_message_fires_nothing() {
        assert!(names(&plain()).is_empty(), "{:?}", evaluate(&plain()));
    }

    #[test]
    fn structure_rules() {
        let mut m = plain();
        m.date = None;
        m.headers.retain(|(n, _)| n != "Date");
        m.message_id = None;
        m.from = vec![mailbox(Some("service@paypal.com"), "x@evil.example")];
        m.subject = Some("YOUR ACCOUNT IS SUSPENDED!!".into());
        let n = names(&m);
        for expected in
            ["MISSING_DATE", "MISSING_MESSAGE_ID", "FROM_DISPLAY_SPOOF", "SUBJ_ALL_CAPS", "SUBJ_EXCLAIM"]
        {
            assert!(n.contains(&expected), "{expected} missing from {n:?}");
        }
    }

    #[test]
    fn forged_freemail_needs_the_providers_own_hops() {
        let mut m = plain();
        m.from = vec![mailbox(Some("Ann"), "ann@hotmail.com")];
        // The HELO name claims Hotmail; the receiving hop found no such reverse DNS.
        m.headers.push((
            "Received".into(),
            "from mx02.hotmail.com ([200.184.93.31]) by belmont.example.org with SMTP".into(),
        ));
        assert!(names(&m).contains(&"FORGED_FREEMAIL_RCVD"));
        // A hop of the provider itself vouches for it.
        m.headers.push((
            "Received".into(),
            "from hotmail.com (bay4-f12.bay4.hotmail.com [65.54.171.12]) by mx.example.com".into(),
        ));
        assert!(!names(&m).contains(&"FORGED_FREEMAIL_RCVD"));
        // So does the relay's own view of the client.
        let mut m = plain();
        m.from = vec![mailbox(Some("Ann"), "ann@gmail.com")];
        m.client_rdns = Some("mail-ed1-f54.google.com".into());
        assert!(!names(&m).contains(&"FORGED_FREEMAIL_RCVD"));
        m.client_rdns = Some("dsl-1-2-3-4.example.net".into());
        assert!(names(&m).contains(&"FORGED_FREEMAIL_RCVD"));
        // Mailing lists re-send their members' mail.
        m.headers.push(("List-Id".into(), "<talk.lists.example.org>".into()));
        assert!(!names(&m).contains(&"FORGED_FREEMAIL_RCVD"));
    }

    #[test]
    fn ratware_fingerprints() {
        let mut m = plain();
        m.headers.retain(|(n, _)| n != "Date");
        m.headers.push(("Date".into(), "Thu, 29 Aug 2002 01:05:56 -1900".into()));
        m.headers.push(("X-Mailer".into(), "rexfd0sUMJVQYfjVBi".into()));
        m.message_id = Some("QEQBgLxHFe@mail.example.net".into());
        let n = names(&m);
        for expected in ["DATE_TZ_ABSURD", "X_MAILER_RANDOM", "MSGID_LETTERS_ONLY"] {
            assert!(n.contains(&expected), "{expected} missing from {n:?}");
        }
        let mut m = plain();
        m.headers.retain(|(n, _)| n != "Date");
        m.headers.push(("Date".into(), "Thu, 29 Aug 2002 01:05:56 +0545 (NPT)".into()));
        m.headers.push(("X-Mailer".into(), "Microsoft Outlook 16.0".into()));
        m.message_id = Some("20260101.1234@example.org".into());
        assert!(names(&m).is_empty(), "{:?}", names(&m));
    }

    #[test]
    fn undeclared_and_raw_8bit() {
        let mut m = plain();
        m.raw_head = b"Subject: caf\xe9 \xe0 la carte\r\nFrom: a@example.org\r\n".to_vec();
        assert!(names(&m).contains(&"HEADER_8BIT"));
        // UTF-8 (SMTPUTF8 mail) and a character cut at the end of the window are fine.
        m.raw_head = "Subject: café\r\n".as_bytes().to_vec();
        assert!(!names(&m).contains(&"HEADER_8BIT"));
        m.raw_head = "Subject: é".as_bytes()[..10].to_vec();
        assert!(!names(&m).contains(&"HEADER_8BIT"));

        let mut m = plain();
        m.headers.push(("Content-Type".into(), "text/plain; charset=\"us-ascii\"".into()));
        m.raw_body = (0..200u8).map(|i| if i % 2 == 0 { 0xc1 } else { b'a' }).collect();
        assert!(names(&m).contains(&"BODY_8BIT_UNDECLARED"));
        m.raw_body = b"Mostly English text with one name: Ren\xe9e.".repeat(10);
        assert!(!names(&m).contains(&"BODY_8BIT_UNDECLARED"));
    }

    #[test]
    fn dense_exclamation_runs() {
        let mut m = plain();
        m.text = Some("ACT NOW!!! Limited offer! Order today!! Only $19.95!".into());
        assert!(names(&m).contains(&"BODY_EXCLAIM_MANY"));
        // One excited line in a long ordinary message.
        m.text = Some(format!("{}We won!!!\n", "An ordinary sentence about the release plan.\n".repeat(60)));
        assert!(!names(&m).contains(&"BODY_EXCLAIM_MANY"));
        // Many marks but no run.
        m.text = Some("Great! Thanks! See you! Bye!".into());
        assert!(!names(&m).contains(&"BODY_EXCLAIM_MANY"));
    }

    #[test]
    fn raw_message_splits_at_the_blank_line() {
        assert_eq!(
            split_raw(b"A: b\r\nC: d\r\n\r\nbody\n\nmore".to_vec()),
            (b"A: b\r\nC: d\r\n".to_vec(), b"body\n\nmore".to_vec())
        );
        assert_eq!(split_raw(b"A: b\n\nbody".to_vec()), (b"A: b\n".to_vec(), b"body".to_vec()));
        assert_eq!(split_raw(b"A: b".to_vec()), (b"A: b".to_vec(), Vec::new()));
    }

    #[test]
    fn generic_greetings_and_noise() {
        let mut m = plain();
        m.text = Some("Dear Sir/Madam,\n\nWe offer the best prices.".into());
        assert!(names(&m).contains(&"BODY_DEAR_GENERIC"));
        m.text = Some("Hello, friend!\nGreat news.".into());
        assert!(names(&m).contains(&"BODY_DEAR_GENERIC"));
        m.text = Some("Dear Friends of the project,\nthe release is out.".into());
        assert!(!names(&m).contains(&"BODY_DEAR_GENERIC"));
        m.text = Some("Dear Susan,\nhis sister friendly says hi.".into());
        assert!(!names(&m).contains(&"BODY_DEAR_GENERIC"));

        m.text = Some("see you soon, -Tiffany kludlkaiplcqcnnaigaybaxhesrhltsp".into());
        assert!(names(&m).contains(&"BODY_HASHBUSTER"));
        m.text = Some(
            "updated weblogs: coolwalkingsmoothtalking and http://averyveryverylongdomainnameexample.com/"
                .into(),
        );
        assert!(!names(&m).contains(&"BODY_HASHBUSTER"));
    }

    #[test]
    fn removal_text_weighs_less_beside_list_unsubscribe() {
        let mut m = plain();
        m.text = Some("To be removed from our list, reply with REMOVE in the subject.".into());
        let score =
            |m: &Input| evaluate(m).iter().find(|h| h.name == "BODY_REMOVE_INSTRUCTIONS").map(|h| h.score);
        assert_eq!(score(&m), Some(1.7));
        m.headers.push(("List-Unsubscribe".into(), "<https://lists.example.org/u/1>".into()));
        assert_eq!(score(&m), Some(0.8));
    }

    #[test]
    fn date_far_from_received() {
        let mut m = plain();
        m.date = Some(1_767_225_600 + 48 * 3600);
        assert!(names(&m).contains(&"DATE_IN_FUTURE"));
        m.date = Some(1_767_225_600 - 30 * 86_400);
        assert!(names(&m).contains(&"DATE_IN_PAST"));
    }

    #[test]
    fn html_and_link_tricks() {
        let mut m = plain();
        m.text = None;
        m.html = Some(
            "<p style='display:none'>hidden</p><a href=\"http://192.0.2.7/login\">https://www.bank.com/login</a>\
             <a href='http://www.bank.com@evil.example/'>x</a><img src=x>"
                .into(),
        );
        let n = names(&m);
        for expected in [
            "HTML_ONLY",
            "HTML_HIDDEN_TEXT",
            "LINK_IP_LITERAL",
            "LINK_OBFUSCATED",
            "LINK_TEXT_MISMATCH",
            "HTML_IMAGE_HEAVY",
        ] {
            assert!(n.contains(&expected), "{expected} missing from {n:?}");
        }
    }

    #[test]
    fn attachments() {
        let mut m = plain();
        m.attachments = vec![
            (Some("invoice.pdf.exe".into()), "application/octet-stream".into()),
            (Some("setup.scr".into()), "application/octet-stream".into()),
            (Some("report.docm".into()), "application/vnd.ms-word".into()),
            (Some("photo.jpg".into()), "image/jpeg".into()),
        ];
        let n = names(&m);
        assert_eq!(n, vec!["ATTACH_DOUBLE_EXTENSION", "ATTACH_EXECUTABLE", "ATTACH_MACRO_DOCUMENT"]);
    }

    #[test]
    fn gtube() {
        let mut m = plain();
        m.text = Some(format!("test {GTUBE} test"));
        assert!(evaluate(&m).iter().any(|h| h.name == "GTUBE" && h.score >= 1000.0));
    }

    #[test]
    fn every_symbol_is_declared() {
        // Symbols given by the rules must be listed so that `disable`/`score.` can name them.
        let mut m = plain();
        m.subject = Some("ADV: FREE CASH NOW!!       x7k2q9".into());
        for hit in evaluate(&m) {
            assert!(SYMBOLS.contains(&hit.name), "{}", hit.name);
        }
    }
}
