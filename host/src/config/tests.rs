use std::net::SocketAddr;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "x.toml", PathBuf::new())
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default().unwrap();
    assert_eq!(c.server.listen, vec![SocketAddr::from(([127, 0, 0, 1], 2525))]);
    assert_eq!(c.tenants[0].domains, vec!["localhost".to_string()]);
    assert!(matches!(c.tenants[0].next_hop, Some(NextHop::Maildir(_))));
    assert_eq!(c.edge().name, EDGE);
}

#[test]
fn errors_name_the_key_and_line() {
    let e = parse("[server]\nhostname = 5\n").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    assert_eq!(e.key.as_deref(), Some("server.hostname"), "{e}");
    let e = parse("[server]\nhostnme = \"a\"\n").unwrap_err();
    assert!(e.to_string().contains("hostnme"), "{e}");
    // Values parsed into types name their key and line too.
    let base = "[server]\nhostname = \"relay.test\"\n[relay]\ntrusted_networks = [\"10.0.0.0/8\",\n  \"nonsense\"]\n";
    let e = parse(base).unwrap_err().to_string();
    assert!(e.contains("line 5: relay.trusted_networks[1]: not a CIDR block"), "{e}");
    let tenants = "[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:m\"\n\
                   [[tenant]]\nname = \"b\"\nnext_hop = \"maildir:m\"\nfailure_mode = \"explode\"\n";
    let e = parse(tenants).unwrap_err().to_string();
    assert!(e.contains("line 7, column 16: tenant[1] (b).failure_mode: `tempfail` or `continue`"), "{e}");
    let e = parse("[delivery]\nmax_deliveries = 0\n[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:m\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2: delivery.max_deliveries"), "{e}");
    let tenant = "[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:m\"\n";
    let e = parse(&format!("[server]\nmax_connections = 10\nprepared_instances = 11\n{tenant}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3: server.prepared_instances: at most server.max_connections"), "{e}");
    assert_eq!(
        parse(&format!("[server]\nprepared_instances = 8\n{tenant}")).unwrap().server.prepared_instances,
        8
    );
    let e = parse("[[tenant]]\nname = \"a\"\nnext_hop = \"nowhere\"\n").unwrap_err();
    assert!(e.to_string().contains("tenant[0] (a).next_hop"), "{e}");
    let e = parse(
        "[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:x\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("relay.trusted_networks[0]"), "{e}");
    let e = parse("[state]\nbackend = \"postgres\"\n[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:x\"\n")
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "line 2, column 11: state.backend: `embedded`, `memory` or a redis:// or rediss:// URL"
        ),
        "{e}"
    );
    // A tenant without a next hop; a tenant named like the edge; the edge with a domain.
    let e = parse("[[tenant]]\nname = \"a\"\n").unwrap_err().to_string();
    assert!(e.contains("line 1: tenant[0] (a).next_hop: required"), "{e}");
    let e = parse("[[tenant]]\nname = \"edge\"\nnext_hop = \"maildir:x\"\n").unwrap_err().to_string();
    assert!(e.contains("tenant[0] (edge).name"), "{e}");
    let e = parse("[edge]\ndomains = [\"a.test\"]\n[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2: edge.domains"), "{e}");
}

#[test]
fn the_edge_takes_a_tenant_s_chain_keys() {
    let c = parse(
        "[edge]\nfailure_mode = \"continue\"\ncpu_ms = 20\n[[edge.policy]]\npath = \"screen.wasm\"\n\
         [[tenant]]\nname = \"a\"\nnext_hop = \"maildir:x\"\n",
    )
    .unwrap();
    assert_eq!(c.edge().name, EDGE);
    assert_eq!(c.edge().failure_mode, OnFault::Continue);
    assert_eq!(c.edge().policies.len(), 1);
    // Without [edge]: an empty chain.
    let c = parse("[[tenant]]\nname = \"a\"\nnext_hop = \"maildir:x\"\n").unwrap();
    assert!(c.edge().policies.is_empty());
}

#[test]
fn the_readme_configurations_are_valid() {
    let readme = include_str!("../../../README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("[[tenant]]"))
        .collect();
    assert!(blocks.len() >= 2, "the README's configurations were not found");
    for block in blocks {
        if let Err(e) = Config::parse(block, "README.md", PathBuf::new()) {
            panic!("{e}\n{block}");
        }
    }
}

#[test]
fn a_fleet_node_is_named_from_the_environment_or_the_host() {
    let redis = "[state]\nbackend = \"redis://127.0.0.1:6379/0\"\n[[tenant]]\nname = \"t\"\ndomains = [\"t.test\"]\nnext_hop = \"smtp:127.0.0.1:25\"\n";
    let named = |node: &str| parse(&format!("[fleet]\n{node}{redis}"));
    assert_eq!(named("node = \"mx1\"\n").unwrap().fleet.unwrap().node, "mx1");
    let e = named("node = \"mx-${SLUICE_NO_SUCH_VARIABLE}\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("fleet.node"), "{e}");
    assert!(e.to_string().contains("SLUICE_NO_SUCH_VARIABLE is not set"), "{e}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(named("").unwrap().fleet.unwrap().node, host.trim());
    assert!(named("node = \"a b\"\n").is_err());
}
