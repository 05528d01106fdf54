//! Test fixture: exports `sluice:policy/hooks@0.1.0` without the hook functions.
#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({ path: "wit", world: "policy" });

struct Component;

impl exports::sluice::policy::hooks::Guest for Component {
    fn describe() -> String {
        "incomplete".to_string()
    }
}

export!(Component);
