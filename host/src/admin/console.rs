//! The web console's page (`GET /`): one HTML file with its style and script inline, no
//! data in it. The script asks for the admin token once (kept in the tab's session storage),
//! then calls the JSON API with `Authorization: Bearer` like any other client.

use hyper::body::Bytes;

/// The page.
pub fn page() -> Bytes {
    Bytes::from_static(include_bytes!("console.html"))
}
