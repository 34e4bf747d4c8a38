//! The data plane against strangers, slow and mute members, and another
//! wire major, on 127.0.0.1.

use super::*;

struct Echo;

impl Handler for Echo {
    fn handle(&self, _from: String, msg: Msg) -> BoxFuture<Option<Msg>> {
        Box::pin(std::future::ready(match msg {
            Msg::Replicate { req, .. } => Some(Msg::Ack { req }),
            _ => None,
        }))
    }
}

async fn server(wire: Wire) -> (Arc<Net>, SocketAddr) {
    server_with(wire, Limits::default()).await
}

async fn server_with(wire: Wire, limits: Limits) -> (Arc<Net>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let net = Net::new("server", "c", wire, Sealer::with_key(&[1; 32], "c"), limits);
    tokio::spawn(net.clone().serve(listener, Arc::new(Echo)));
    (net, addr)
}

fn refused(net: &Net) -> u64 {
    net.counters.refused.load(Ordering::Relaxed)
}

/// Reads until the server closes the connection (or 5 s pass): true if it closed.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stranger_announcing_a_huge_first_frame_is_cut_off_at_the_hello_cap() {
    use tokio::io::AsyncWriteExt;
    let (net, addr) = server(Wire::default()).await;
    let mut stranger = TcpStream::connect(addr).await.unwrap();
    stranger.write_all(&(250u32 << 20).to_be_bytes()).await.unwrap();
    // Whatever follows is never buffered: the length alone is refused.
    let _ = stranger.write_all(&vec![0u8; 64 << 10]).await;
    assert!(closed_by_server(&mut stranger).await, "the server kept the connection open");
    wait_for("the refusal to be counted", || refused(&net) == 1).await;
}

#[tokio::test]
async fn garbage_and_silence_are_refused_and_counted() {
    use tokio::io::AsyncWriteExt;
    let limits = Limits { hello_timeout_ms: 300, ..Limits::default() };
    let (net, addr) = server_with(Wire::default(), limits).await;
    // A small frame that is not a sealed Hello.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&10u32.to_be_bytes()).await.unwrap();
    garbage.write_all(b"0123456789").await.unwrap();
    assert!(closed_by_server(&mut garbage).await);
    // Half a frame, then nothing: closed at the Hello deadline.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&100u32.to_be_bytes()).await.unwrap();
    assert!(closed_by_server(&mut slow).await);
    // Nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await);
    // Connected and gone at once.
    drop(TcpStream::connect(addr).await.unwrap());
    wait_for("four refusals", || refused(&net) == 4).await;
    // A member still gets in.
    let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
    let answer =
        client.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, Duration::from_secs(5)).await;
    assert!(matches!(answer, Ok(Msg::Ack { req: 1 })), "{answer:?}");
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once_and_the_count_comes_back() {
    let limits = Limits { max_connections_per_address: 3, hello_timeout_ms: 60_000, ..Limits::default() };
    let (net, addr) = server_with(Wire::default(), limits).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for("three accepted", || net.accepted.open() == 3).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut over).await, "a fourth connection from the address was kept");
    assert_eq!(refused(&net), 1);
    // The idle ones were not closed meanwhile (their Hello deadline is a minute).
    assert_eq!(net.accepted.open(), 3);
    drop(idle);
    wait_for("the closed connections to be given back", || net.accepted.open() == 0).await;
    let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
    let answer =
        client.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, Duration::from_secs(5)).await;
    assert!(matches!(answer, Ok(Msg::Ack { req: 1 })), "{answer:?}");
}

#[tokio::test]
async fn a_members_frame_over_the_limit_closes_its_connection() {
    let limits = Limits { max_frame_bytes: 64 << 10, ..Limits::default() };
    let (net, addr) = server_with(Wire::default(), limits.clone()).await;
    let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
    let small = Msg::Replicate { req: 1, entries: vec![] };
    assert!(client.request("server", addr, small, 1, Duration::from_secs(5)).await.is_ok());
    let entry = crate::store::WireEntry {
        cache: "c".into(),
        key: b"k".to_vec(),
        value: Some(vec![7; 100 << 10]),
        version: crate::store::Version { hlc: 1, member: 1 },
        deadline: 0,
    };
    let big = Msg::Replicate { req: 2, entries: vec![entry] };
    let answer = client.request("server", addr, big, 2, Duration::from_secs(5)).await;
    assert!(matches!(answer, Err(NetError::Closed { .. })), "{answer:?}");
    assert_eq!(refused(&net), 1);
}

#[tokio::test]
async fn a_member_that_closes_at_the_hello_is_reported_as_stopping_not_as_another_key() {
    // Reads the Hello, then closes without an answer: a member that is going away.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = std::thread::spawn(move || {
        use std::io::Read;
        let (mut stream, _) = listener.accept().unwrap();
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut hello).unwrap();
    });
    let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
    let answer =
        client.request("gone", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, Duration::from_secs(5)).await;
    let message = answer.expect_err("no member answered").to_string();
    assert!(message.contains("closed the connection without answering the Hello: it is stopping"), "{message}");
    assert!(!message.contains("no welcome"), "{message}");
    closer.join().unwrap();
}

#[tokio::test]
async fn a_member_that_connects_again_replaces_its_older_connection() {
    let (net, addr) = server(Wire::default()).await;
    let timeout = Duration::from_secs(5);
    for round in 1..=3u64 {
        // A new Net each round: a member restarted or re-joined, its old socket not closed.
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
        let answer =
            client.request("server", addr, Msg::Replicate { req: round, entries: vec![] }, round, timeout).await;
        assert!(answer.is_ok(), "{answer:?}");
        std::mem::forget(client);
        wait_for("one accepted connection", || net.accepted.open() == 1 && net.connection_counts().1 == 1).await;
    }
}

#[tokio::test]
async fn a_member_that_never_answers_does_not_hold_up_requests_to_the_others() {
    let (_server, addr) = server(Wire::default()).await;
    // Accepts connections (the kernel does) but never answers a hello: a stopped process.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move {
            let msg = Msg::Replicate { req: 1, entries: vec![] };
            client.request("mute", mute_addr, msg, 1, Duration::from_secs(30)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Connecting to the mute member is in progress; another member still answers.
    let msg = Msg::Replicate { req: 2, entries: vec![] };
    let answer = client.request("server", addr, msg, 2, Duration::from_secs(10)).await;
    assert!(matches!(answer, Ok(Msg::Ack { req: 2 })), "{answer:?}");
    assert!(!stuck.is_finished(), "the mute member cannot have answered");
    stuck.abort();
    drop(mute);
}

#[tokio::test]
async fn another_wire_major_is_refused_on_both_sides_and_the_same_major_talks() {
    let (server_net, addr) = server(Wire { major: 1, minor: 0 }).await;
    let timeout = Duration::from_secs(5);

    let newer = Net::new("newer", "c", Wire { major: 2, minor: 0 }, Sealer::with_key(&[1; 32], "c"), Limits::default());
    let err = newer.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, timeout).await;
    let Err(NetError::Refused { reason, .. }) = err else { panic!("expected a refusal, got {err:?}") };
    assert!(reason.contains("member newer speaks wire protocol 2.0, member server speaks 1.0"), "{reason}");
    assert!(reason.contains("majors differ"), "{reason}");
    assert_eq!(server_net.counters.refused.load(Ordering::Relaxed), 1);

    let minor = Net::new("minor", "c", Wire { major: 1, minor: 7 }, Sealer::with_key(&[1; 32], "c"), Limits::default());
    let answer = minor.request("server", addr, Msg::Replicate { req: 2, entries: vec![] }, 2, timeout).await;
    assert!(matches!(answer, Ok(Msg::Ack { req: 2 })), "{answer:?}");
}
