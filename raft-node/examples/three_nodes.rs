//! Three replicated nodes inside one's own program: each with its own RocksDB directory and
//! loopback port, formed into a cluster, then used through the in-process client of one of
//! them and through a network client of all three, while watching the change feed.
//!
//! `cargo run --release -p raft-node --example three_nodes`

use std::error::Error;

use allocator_core::{Owner, PoolSpec};
use raft_node::{AdminCommand, Client, Node, NodeConfig, NodeEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("raftipam-three-nodes-{}", std::process::id()));
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let cfg = NodeConfig::new(id, "127.0.0.1:0".parse()?, dir.join(format!("node-{id}")));
        nodes.push(Node::start(cfg).await?);
    }
    // One node makes a one-node cluster; the others join it as voters.
    nodes[0].init().await?;
    let local = nodes[0].client();
    for n in &nodes[1..] {
        let addr = n.addr().to_string();
        local
            .admin(AdminCommand::AddNode { id: n.id(), addr })
            .await?;
    }

    // Watch what node 3 applies while node 1's in-process client writes.
    let mut feed = nodes[2].subscribe();
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = "global".into();
        spec.subnet = Some("10.42.0.0/24".parse()?);
        spec
    };
    let pool = local.create_pool(spec, "example").await?;
    let addr = local
        .allocate(&pool, None, Owner::new("host-a", "web-1"))
        .await?;
    println!("allocated {addr} in {pool}");
    while let Some(ev) = feed.next().await {
        if let NodeEvent::Changed(c) = ev {
            if c.kind == "allocated" {
                println!(
                    "node 3 applied the allocation of {:?} at index {}",
                    c.addr, c.index
                );
                break;
            }
        }
    }

    // A client over the network, as another process would use.
    let remote = Client::connect(nodes.iter().map(|n| n.addr().to_string()))?;
    println!(
        "the cluster's voters: {:?}",
        remote.status().await?.voters()
    );
    assert_eq!(remote.allocations(&pool).await?.len(), 1);

    for n in nodes {
        n.shutdown().await?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
