//! conf/clusterhost.properties: the Java .properties reader (java-properties)
//! and the typed `Properties::parse`, then what the node derives from a
//! file it took (`values`, `effective`).
#![no_main]

use std::path::Path;

use clusterhost::properties::{Properties, PropertiesError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Properties::parse(Path::new("conf/clusterhost.properties"), data) {
        Ok((properties, unknown)) => {
            for key in &unknown {
                assert!(key.line >= 1, "unknown key {key:?} without a line");
            }
            let effective = properties.effective();
            assert!(effective.contains_key("clustering.enabled"));
            let _ = properties.admin_bind();
            let _ = properties.config_dir(Path::new("/home"));
        }
        Err(PropertiesError::Invalid { message, .. }) => assert!(!message.is_empty()),
        Err(e) => panic!("parsing bytes cannot fail to read: {e}"),
    }
});
