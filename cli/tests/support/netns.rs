//! A private network of Linux network namespaces for the multi-node rehearsal: a hub namespace
//! holding a bridge, one namespace per node joined to the bridge by a veth pair, and one more leg
//! into the test's own namespace (the operator's seat: the test submits, watches and reads
//! storage through it). Addresses come from a private /24 no route of the host touches; nothing
//! else is reachable from the nodes. A node's link is cut on the hub side (`ip link set … down`:
//! its packets go nowhere, as when a cable or switch port dies) and restored the same way.
//! Dropping the network deletes every namespace and link it made, also while a failing test
//! unwinds.

use super::services::Place;
use std::process::Command;

pub struct Net {
    id: String,
    subnet: String,
    hub: String,
    nodes: Vec<Node>,
    /// The test's leg in its own namespace.
    host_leg: String,
}

struct Node {
    name: String,
    ns: String,
    ip: String,
    /// The veth end in the hub namespace (what a cut takes down).
    hub_end: String,
}

/// Runs `ip ARGS`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the `ip` command (iproute2) runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Whether this process may make namespaces (root, or CAP_NET_ADMIN + CAP_SYS_ADMIN).
pub fn can_make_namespaces() -> Result<(), String> {
    let out = Command::new("ip").args(["netns", "add", "acufarm-probe"]).output().map_err(|e| format!("`ip` (iproute2) cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip netns add` failed ({}); the rehearsal needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = Command::new("ip").args(["netns", "del", "acufarm-probe"]).output();
    Ok(())
}

/// A 10.x.y.0/24 that no address or route of the host overlaps.
fn free_subnet(seed: u32) -> String {
    let routes =
        Command::new("ip").args(["-4", "route", "show", "table", "all"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let addrs = Command::new("ip").args(["-4", "-o", "addr"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let taken = |prefix: &str| routes.contains(prefix) || addrs.contains(prefix);
    (0..200)
        .map(|i| format!("10.{}.{}", 200 + (seed + i) % 50, (seed / 50 + i * 7) % 250 + 1))
        .find(|prefix| !taken(&format!("{prefix}.")))
        .expect("no free 10.x.y.0/24 for the rehearsal's network")
}

impl Net {
    /// Makes the hub, a namespace per node (address `.11`, `.12`, … in node order) and the test's
    /// leg (`.254`).
    pub fn new(nodes: &[&str]) -> Net {
        let seed = std::process::id() ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let id = format!("{:04x}", seed & 0xffff);
        let subnet = free_subnet(seed);
        let mut net = Net { hub: format!("afr{id}-hub"), host_leg: format!("afr{id}op"), id, subnet, nodes: Vec::new() };
        // From here on, Drop removes whatever was made, also when a step below fails.
        ip(&["netns", "add", &net.hub]);
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net.hub, "link", "set", "br0", "up"]);
        for (i, name) in nodes.iter().enumerate() {
            let node = Node {
                name: name.to_string(),
                ns: format!("afr{}-{name}", net.id),
                ip: format!("{}.{}", net.subnet, 11 + i),
                hub_end: format!("v{}n{i}", net.id),
            };
            ip(&["netns", "add", &node.ns]);
            net.nodes.push(node);
            let node = net.nodes.last().unwrap();
            ip(&["link", "add", &node.hub_end, "netns", &net.hub, "type", "veth", "peer", "name", "eth0", "netns", &node.ns]);
            ip(&["-n", &node.ns, "addr", "add", &format!("{}/24", node.ip), "dev", "eth0"]);
            ip(&["-n", &node.ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &node.ns, "link", "set", "lo", "up"]);
            ip(&["-n", &net.hub, "link", "set", &node.hub_end, "master", "br0", "up"]);
        }
        let hub_leg = format!("v{}op", net.id);
        ip(&["link", "add", &net.host_leg, "type", "veth", "peer", "name", &hub_leg, "netns", &net.hub]);
        ip(&["addr", "add", &format!("{}.254/24", net.subnet), "dev", &net.host_leg]);
        ip(&["link", "set", &net.host_leg, "up"]);
        ip(&["-n", &net.hub, "link", "set", &hub_leg, "master", "br0", "up"]);
        net
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name} in the rehearsal's network"))
    }

    /// Where a node's processes run and are reached.
    pub fn place(&self, name: &str) -> Place {
        let node = self.node(name);
        Place { netns: Some(node.ns.clone()), host: node.ip.clone() }
    }

    pub fn ip(&self, name: &str) -> String {
        self.node(name).ip.clone()
    }

    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.subnet)
    }

    /// Cuts every link of `name` (coordinators, storage, database alike).
    pub fn cut(&self, name: &str) {
        ip(&["-n", &self.hub, "link", "set", &self.node(name).hub_end, "down"]);
    }

    pub fn restore(&self, name: &str) {
        ip(&["-n", &self.hub, "link", "set", &self.node(name).hub_end, "up"]);
    }

    /// The namespaces this network made that still exist (empty after drop).
    pub fn namespaces_of(id: &str) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        out.lines().filter_map(|l| l.split_whitespace().next()).filter(|ns| ns.starts_with(&format!("afr{id}-"))).map(String::from).collect()
    }

    pub fn id(&self) -> String {
        self.id.clone()
    }

    pub fn host_leg(&self) -> String {
        self.host_leg.clone()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it and so their peers; the host leg
        // goes with its peer in the hub. Each step runs even when an earlier one failed.
        for ns in self.nodes.iter().map(|n| n.ns.clone()).chain([self.hub.clone()]) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.host_leg]).output();
        let left = Net::namespaces_of(&self.id);
        if !left.is_empty() {
            eprintln!("rehearsal: could not delete namespaces {left:?}; remove them with `ip netns del NAME`");
        }
    }
}
