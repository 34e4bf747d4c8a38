//! `clusterhost cache`: read and write cache entries (string keys and
//! values) through the admin API.

use std::process::ExitCode;

use super::{api, AdminTarget};
use crate::admin::client::segment;
use crate::admin::contract::CacheValue;

fn cache_path(cache: &str, key: &str) -> String {
    format!("/api/caches/{}/{}", segment(cache), segment(key))
}

/// `cache get CACHE KEY`: prints the value.
pub fn get(admin: &AdminTarget, cache: &str, key: &str) -> ExitCode {
    let path = cache_path(cache, key);
    api(
        admin,
        |c| c.get(&path),
        |answer| {
            println!("{}", answer.view::<CacheValue>()?.value);
            Ok(())
        },
    )
}

/// `cache put CACHE KEY VALUE`.
pub fn put(admin: &AdminTarget, cache: &str, key: &str, value: &str) -> ExitCode {
    let path = cache_path(cache, key);
    api(
        admin,
        |c| c.put(&path, value.as_bytes()),
        |_| {
            println!("{cache}/{key} set");
            Ok(())
        },
    )
}

/// `cache remove CACHE KEY`.
pub fn remove(admin: &AdminTarget, cache: &str, key: &str) -> ExitCode {
    let path = cache_path(cache, key);
    api(
        admin,
        |c| c.delete(&path),
        |_| {
            println!("{cache}/{key} removed");
            Ok(())
        },
    )
}
