//! TCP connections this relay opens to other mail servers (next hops, recipient
//! verification), set up alike: Nagle off and TCP keepalive on.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long a connection to a next hop may be silent before TCP keepalive probes it, how
/// often it probes then, and how many unanswered probes end the connection.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(15), Duration::from_secs(5), 3);

/// A TCP connection to a next hop, with Nagle off and TCP keepalive on.
///
/// A connection the server no longer has — a busy server's accept queue dropped the
/// handshake's last ACK (with SYN cookies nothing resends it), the server rebooted, a firewall
/// forgot the connection — looks open to us, and SMTP servers speak first: without keepalive
/// the relay would wait out the reply timeout (5 minutes for a greeting, 10 after the final
/// dot) holding a delivery slot. The first probe, after 15 s of silence, draws a reset from
/// such a server (a silent path ends the connection after three unanswered probes, about
/// 30 s), and the attempt is deferred. A live server's kernel answers the probes, so a slow
/// greeting or a long scan after the final dot is not cut short.
pub async fn connect_tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    use rustix::net::sockopt;
    let tcp = TcpStream::connect((host, port)).await?;
    let _ = tcp.set_nodelay(true);
    let (idle, interval, count) = KEEPALIVE;
    let keepalive = sockopt::set_tcp_keepidle(&tcp, idle)
        .and_then(|()| sockopt::set_tcp_keepintvl(&tcp, interval))
        .and_then(|()| sockopt::set_tcp_keepcnt(&tcp, count))
        .and_then(|()| sockopt::set_socket_keepalive(&tcp, true));
    if let Err(e) = keepalive {
        tracing::debug!(host, port, error = %e, "cannot turn TCP keepalive on");
    }
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use rustix::net::sockopt;

    /// A connection to a next hop probes a silent peer after 15 s, every 5 s, 3 times.
    #[tokio::test]
    async fn connections_to_next_hops_keep_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = super::connect_tcp("127.0.0.1", port).await.unwrap();
        assert!(sockopt::socket_keepalive(&tcp).unwrap());
        assert_eq!(sockopt::tcp_keepidle(&tcp).unwrap(), super::KEEPALIVE.0);
        assert_eq!(sockopt::tcp_keepintvl(&tcp).unwrap(), super::KEEPALIVE.1);
        assert_eq!(sockopt::tcp_keepcnt(&tcp).unwrap(), super::KEEPALIVE.2);
        assert!(tcp.nodelay().unwrap());
    }
}
