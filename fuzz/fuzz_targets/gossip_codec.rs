//! The gossip message codec: arbitrary bytes decoded as a `wire::Msg`; a
//! message that decodes re-encodes to bytes that decode to the same message.
#![no_main]

use gossip::wire::Msg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = postcard::from_bytes::<Msg>(data) else { return };
    let encoded = postcard::to_allocvec(&msg).expect("messages always encode");
    let again: Msg = postcard::from_bytes(&encoded).expect("a re-encoded message decodes");
    assert_eq!(format!("{msg:?}"), format!("{again:?}"));
    assert_eq!(postcard::to_allocvec(&again).expect("messages always encode"), encoded);
    assert_eq!(msg.reply_to(), again.reply_to());
});
