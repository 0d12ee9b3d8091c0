//! `im_core::ids`: the id validators, `ConversationId::from_key` / `to_key`
//! and `ConversationId::from_wire` on arbitrary strings: no panic, the
//! validators follow the documented rule, a key that parses is the one key
//! of its conversation, and valid conversations round-trip through keys and
//! wire names.
//!
//! Input: 1 byte of wire kind, then UTF-8 text (lossily converted).
#![no_main]

use im_core::ids::{
    ChannelId, ConversationId, DeviceId, MAX_ID_BYTES, UserId, validate_client_msg_id,
};
use im_core::pb;
use libfuzzer_sys::fuzz_target;

fn acceptable(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    let [kind, text @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let s: &str = &text;

    // Validators.
    let want = acceptable(s);
    assert_eq!(UserId::new(s).is_ok(), want);
    assert_eq!(DeviceId::new(s).is_ok(), want);
    assert_eq!(ChannelId::new(s).is_ok(), want);
    assert_eq!(validate_client_msg_id(s).is_ok(), want);

    // Store keys: only canonical keys parse.
    if let Ok(c) = ConversationId::from_key(s) {
        assert_eq!(c.to_key(), s, "a key parsed as another conversation's");
    }
    // Conversations built from the text round-trip through their key.
    let mut built = Vec::new();
    if let Some((a, b)) = s.split_once('|') {
        if let (Ok(a), Ok(b)) = (UserId::new(a), UserId::new(b)) {
            built.push(ConversationId::direct(a, b));
        }
    }
    built.extend(ConversationId::group(s));
    built.extend(ConversationId::room(s));
    for c in built {
        assert_eq!(ConversationId::from_key(&c.to_key()).as_ref(), Ok(&c));
    }

    // Wire names, as `u0` sees them.
    let viewer = UserId::new("u0").expect("valid");
    let r = pb::ConversationRef {
        kind: i32::from(*kind as i8),
        id: s.to_owned(),
    };
    if let Ok(c) = ConversationId::from_wire(&viewer, &r) {
        assert!(want);
        assert_eq!(c.to_wire(&viewer), r);
    }
});
