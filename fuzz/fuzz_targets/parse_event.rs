//! Any bytes are either a valid event or an anomaly reason; never a panic.
//! A valid event must survive its canonical JSON form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamforge::event::parse_event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = parse_event(data) {
        let again = event.to_json();
        let reparsed =
            parse_event(again.as_bytes()).expect("the canonical form of a valid event parses");
        assert_eq!(event, reparsed);
    }
});
