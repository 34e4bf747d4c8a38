//! Writes the seed corpus: `make-seeds DIR` fills DIR/<target>/seed-* with a
//! handful of valid inputs per target but redis_codec (`make-seeds-redis DIR`:
//! the two plugins cannot link into one binary, see docs/fuzzing.md). The inputs are
//! made with the crates' own types, so they stay valid as the formats grow.

use std::path::Path;

use clusterhost::admin::contract::NodeDetail;
use clusterhost_fuzz::{elf_with_manifest, GOSSIP_CLUSTER, GOSSIP_KEY};
use clusterhost_plugin_api::manifest::MANIFEST_PADDING;
use clusterhost_plugin_api::Manifest;
use gossip::crypto::Sealer;
use gossip::store::{Version, WireEntry};
use gossip::wire::Msg;

const MANIFEST: &str = "manifest_format = 1\nid = \"gossip\"\nversion = \"0.1.0\"\n\
    description = \"Embedded cluster strategy\"\nhost_req = \"^0.1\"\napi_req = \"^0.1\"\n\
    provides = [\"cluster-strategy\", ]\nconflicts = [\"redis\", ]\nwire_protocol = \"1.1\"\n";

const PROPERTIES: &str = "# comment\n! also a comment\ncluster.startup.delay.seconds = 2\n\
    cluster.startup.retry.count:3\ncluster.config.file gossip\\u002dtest.toml\n\
    cluster.config.directory = /etc/\\\n    clusterhost\nplugins.watch = poll\nplugins.poll.seconds = 0.5\n";

const NODE_KEYS: &str = "node.name = n-1\nnode.bind = 10.0.0.2\ncluster.port = 5801\nadmin.port = 9191\n\
    admin.bind = 0.0.0.0\nadmin.token.file = /etc/ch/token\nclustering.enabled = yes\nunknown.key = 1\n";

const NODE_DETAIL: &str = r#"{"node":"n1","version":"0.1.0","cluster":{"state":"clustered"},"enabled":true,
"strategy":"gossip 0.1.0","caches":[{"name":"c","clustered":true,"entries":2,"bytes":64,"hits":1,"misses":0}],
"plugins":[{"file":"plugins/gossip.so","id":"gossip","version":"0.1.0","state":"active","reason":null,
"sha256":"00ff","changed_at_ms":1700000000000}]}"#;

const NODE_DETAIL_STARTING: &str = r#"{"node":"n2","version":"0.1.0","cluster":{"state":"starting","attempt":1,
"attempts":2,"next_in_ms":5000,"detail":"waiting"},"enabled":false,"strategy":null,"caches":[],"plugins":[]}"#;

fn write(dir: &Path, target: &str, name: &str, mode: Option<u8>, body: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let mut bytes = mode.map(|m| vec![m]).unwrap_or_default();
    bytes.extend_from_slice(body);
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn entry(cache: &str, key: &[u8], value: Option<&[u8]>) -> WireEntry {
    WireEntry {
        cache: cache.into(),
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
        version: Version::at_ms(1_700_000_000_000, 42),
        deadline: 0,
    }
}

fn messages() -> Vec<(&'static str, Msg)> {
    vec![
        ("hello", Msg::Hello { cluster: GOSSIP_CLUSTER.into(), member: "n1".into(), wire_major: 1, wire_minor: 1 }),
        ("welcome", Msg::Welcome { member: "n2".into() }),
        (
            "replicate",
            Msg::Replicate { req: 7, entries: vec![entry("c", b"k", Some(b"v")), entry("c", b"gone", None)] },
        ),
        (
            "state-page-request",
            Msg::StatePageRequest { req: 9, after: Some(("a".into(), b"1".to_vec())), max_bytes: 65536 },
        ),
        ("state-page", Msg::StatePage { req: 9, entries: vec![entry("b", b"\x00", Some(b""))], more: true }),
        (
            "timed-replicate",
            Msg::TimedReplicate {
                req: 8,
                entries: vec![WireEntry { deadline: 1_700_000_001_000, ..entry("c", b"t", Some(b"v")) }],
            },
        ),
        ("lock", Msg::Lock { req: 3, name: "l".into(), owner: "o".into(), member: "n1".into(), wait_ms: Some(100) }),
        (
            "task",
            Msg::Task { req: 4, name: "t".into(), payload: vec![1, 2, 3], from: "n1".into(), fire_and_forget: false },
        ),
        ("task-reply", Msg::TaskReply { req: 4, outcome: Err("no such task".into()) }),
        ("leaving", Msg::Leaving { member: "n3".into(), generation: 2, epoch: 5 }),
    ]
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: make-seeds CORPUS_DIR");
    let dir = Path::new(&dir);

    // manifest: 0 = whole file, 1 = section text, 2 = text in a minimal ELF.
    let padded = format!("{MANIFEST}{}", " ".repeat(MANIFEST_PADDING));
    Manifest::parse(&padded).expect("the seed manifest is valid");
    write(dir, "manifest", "text", Some(1), MANIFEST.as_bytes());
    write(dir, "manifest", "text-padded", Some(1), padded.as_bytes());
    write(dir, "manifest", "text-bad-id", Some(1), MANIFEST.replace("\"gossip\"", "\"Gossip!\"").as_bytes());
    write(dir, "manifest", "elf-wrapped", Some(2), MANIFEST.as_bytes());
    write(dir, "manifest", "elf", Some(0), &elf_with_manifest(MANIFEST.as_bytes()));
    write(dir, "manifest", "elf-truncated", Some(0), &elf_with_manifest(MANIFEST.as_bytes())[..100]);

    // properties: the shipped file and two samples.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/clusterhost.properties");
    write(dir, "properties", "shipped", None, &std::fs::read(shipped).expect("conf/clusterhost.properties"));
    write(dir, "properties", "syntax", None, PROPERTIES.as_bytes());
    write(dir, "properties", "node-keys", None, NODE_KEYS.as_bytes());
    write(dir, "properties", "invalid", None, b"cluster.startup.retry.count = -1\n");

    // gossip: sealed frames (mode 0) and plain messages (mode 1, and the codec target).
    let sealer = Sealer::with_key(&GOSSIP_KEY, GOSSIP_CLUSTER);
    for (name, msg) in messages() {
        let plain = postcard::to_allocvec(&msg).expect("messages encode");
        write(dir, "gossip_codec", name, None, &plain);
        if matches!(name, "hello" | "replicate" | "state-page-request" | "state-page") {
            write(dir, "gossip_frame", &format!("{name}-sealed"), Some(0), &sealer.seal(&plain));
            write(dir, "gossip_frame", &format!("{name}-plain"), Some(1), &plain);
        }
    }

    // admin: 0 = properties PUT body, 1 = cache value body, 2 = node detail, 3 = stored cache value.
    write(dir, "admin_json", "properties", Some(0), NODE_KEYS.as_bytes());
    write(dir, "admin_json", "cache-value", Some(1), "a value, ünïcode".as_bytes());
    for (name, text) in [("node-detail", NODE_DETAIL), ("node-detail-starting", NODE_DETAIL_STARTING)] {
        serde_json::from_str::<NodeDetail>(text).expect("the seed detail is valid");
        write(dir, "admin_json", name, Some(2), text.as_bytes());
    }
    let stored = postcard::to_allocvec(&"stored value".to_string()).expect("encodes");
    write(dir, "admin_json", "stored-value", Some(3), &stored);
}
