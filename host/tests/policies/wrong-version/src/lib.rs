//! Test fixture: built against `sluice:policy@0.9.0`, which the host does not provide.
#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({ path: "wit", world: "policy" });

struct Component;

impl exports::sluice::policy::hooks::Guest for Component {
    fn describe() -> String {
        sluice::policy::host::log("describe");
        "wrong-version".to_string()
    }
}

export!(Component);
