//! A server that fails a connection lingers: it shuts its writing side down and
//! reads (discarding) until the client's EOF. Closing a socket with unread input
//! makes the kernel reset the connection and drop what it has not sent yet, so a
//! client still sending when it was failed would lose the close frame saying why,
//! and whatever was queued before it.

use chinwag_core::Config;
use chinwag_tests::{client_frame, server_frames, upgrade_request};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const ECHOES: usize = 40;
const ECHO_SIZE: usize = 1000;

#[tokio::test]
async fn a_client_still_sending_when_failed_reads_everything_before_the_close_and_its_code() {
    // The server's socket can hold every echo while the client does not read; the
    // client's receive window holds a few of them.
    let listener = TcpSocket::new_v4().unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listener.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config { max_message_size: 64 << 10, max_frame_size: 64 << 10, ..Config::default() };
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&stream).set_send_buffer_size(4 << 20).unwrap();
        let mut ws = chinwag_tokio::accept_with_config(stream, config).await.unwrap();
        while let Some(message) = ws.recv().await {
            if ws.send(&message).await.is_err() {
                break;
            }
        }
        ws.close_info()
    });

    let client = TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(4096).unwrap();
    let mut stream = client.connect(addr).await.unwrap();
    stream.write_all(upgrade_request(addr, "/").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "no 101");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Echoes the client does not read yet: most stay in the server's socket.
    for _ in 0..ECHOES {
        stream.write_all(&client_frame(0x81, &[b'e'; ECHO_SIZE], true)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A message over the limit, still being sent when the server fails it (1009).
    let mut oversized = vec![0x82, 0x80 | 127];
    oversized.extend_from_slice(&(10u64 << 20).to_be_bytes());
    oversized.extend_from_slice(&[1, 2, 3, 4]);
    oversized.resize(oversized.len() + (256 << 10), 0);
    // A reset while this is written is the failure this test is about: reported below.
    let _ = stream.write_all(&oversized).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    let read = read.expect("the server did not end the connection");
    let frames = server_frames(&received);
    let echoes = frames.iter().filter(|(opcode, payload)| *opcode == 1 && payload.len() == ECHO_SIZE).count();
    assert!(read.is_ok(), "the connection was reset after {echoes} of {ECHOES} echoes: {read:?}");
    assert_eq!(echoes, ECHOES, "echoes lost");
    let close = frames.last().expect("no frames");
    assert_eq!(close.0, 8, "the last frame is not the close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1009);
    drop(stream);
    let closed = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    assert_eq!(closed.and_then(|c| c.sent).map(|f| f.code.0), Some(1009));
}
