//! The fleet's network: a bridge in the harness's namespace (the peers listen on its
//! address) and per host a network namespace joined to it by a veth pair. Everything is
//! named with the run's tag and torn down on drop, whatever happened.

use anyhow::{Context, bail};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The bridge's address (the peers') is .1 of this /24; host `i` is .(10 + i).
const SUBNET: [u8; 3] = [10, 231, 0];

pub fn bridge_ip() -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 1)
}

/// One host's namespace.
pub struct NetHost {
    pub ns_name: String,
    /// The pair's end in the harness's namespace (down: the host is cut off).
    pub veth: String,
    pub ip: Ipv4Addr,
    pub ns: Arc<std::fs::File>,
}

pub struct Network {
    pub tag: String,
    bridge: String,
    pub hosts: Vec<NetHost>,
}

/// Runs `ip ARGS`, failing with what it said.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Network {
    /// The bridge and `hosts` namespaces, each with its loopback and its veth up.
    pub fn create(hosts: usize) -> anyhow::Result<Self> {
        let subnet = format!("{}.{}.{}.0/24", SUBNET[0], SUBNET[1], SUBNET[2]);
        let taken = Command::new("ip")
            .args(["-o", "addr", "show", "to", &subnet])
            .output()?;
        if !taken.stdout.is_empty() {
            bail!(
                "fleet: {subnet} is already on an interface here (a run left behind?): {}",
                String::from_utf8_lossy(&taken.stdout).trim()
            );
        }
        let tag = format!("{:04x}", std::process::id() & 0xffff);
        let mut net = Network {
            bridge: format!("cfnfb{tag}"),
            tag,
            hosts: Vec::new(),
        };
        let bridge = net.bridge.clone();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", bridge_ip()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..hosts {
            let ns_name = format!("cfn-fleet-{}-h{i}", net.tag);
            let veth = format!("cfnf{}h{i}", net.tag);
            let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 10 + i as u8);
            ip(&["netns", "add", &ns_name])?;
            let ns = std::fs::File::open(Path::new("/run/netns").join(&ns_name))?;
            net.hosts.push(NetHost {
                ns_name: ns_name.clone(),
                veth: veth.clone(),
                ip: addr,
                ns: Arc::new(ns),
            });
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns_name,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns_name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns_name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns_name, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Cuts host `i` off the network, or puts it back.
    pub fn set_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        ip(&[
            "link",
            "set",
            &self.hosts[i].veth,
            if up { "up" } else { "down" },
        ])
    }

    /// SIGKILLs every process in host `i`'s namespace (a power cut); how many there were.
    pub fn kill_all_in(&self, i: usize) -> usize {
        let Ok(want) = self.hosts[i].ns.metadata().map(|m| (m.dev(), m.ino())) else {
            return 0;
        };
        let mut killed = 0;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let same = std::fs::metadata(e.path().join("ns/net"))
                .is_ok_and(|m| (m.dev(), m.ino()) == want);
            if same {
                // SAFETY: kill(2) of a pid found in the namespace this harness made.
                #[allow(unsafe_code)]
                let sent = unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
                killed += usize::from(sent);
            }
        }
        killed
    }

    /// Namespaces and links of this run still present (after the drop: none).
    pub fn leftovers(tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        for args in [&["netns", "list"][..], &["-o", "link", "show"][..]] {
            if let Ok(o) = Command::new("ip").args(args).output() {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    if line.contains(&format!("cfn-fleet-{tag}-"))
                        || line.contains(&format!("cfnf{tag}h"))
                        || line.contains(&format!("cfnfb{tag}"))
                    {
                        out.push(
                            line.split_whitespace()
                                .take(2)
                                .collect::<Vec<_>>()
                                .join(" "),
                        );
                    }
                }
            }
        }
        out
    }
}

/// What an earlier run killed before its clean-up left (namespaces, links and tmpfs
/// mounts named as this harness names them), removed when no other fleet run is alive;
/// each one named on stderr.
pub fn remove_stale() {
    let me = std::process::id().to_string();
    let other_run = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            // Numbered entries only: /proc/self is this process.
            pid != me
                && pid.bytes().all(|b| b.is_ascii_digit())
                && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let mut args = c.split(|&b| b == 0);
                    args.next().is_some_and(|a| a.ends_with(b"xtask"))
                        && args.next() == Some(&b"fleet"[..])
                })
        });
    if other_run {
        return;
    }
    let text = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in text(&["netns", "list"]).lines() {
        if let Some(name) = line
            .split_whitespace()
            .next()
            .filter(|n| n.starts_with("cfn-fleet-"))
        {
            eprintln!("fleet: removing namespace {name}, left by an earlier run");
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in text(&["-o", "link", "show"]).lines() {
        let name = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(':');
        let name = name.split('@').next().unwrap_or("");
        if name.starts_with("cfnfb") || name.starts_with("cfnf") && name.contains('h') {
            eprintln!("fleet: removing link {name}, left by an earlier run");
            let _ = ip(&["link", "del", name]);
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.contains("/cfn-fleet."))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        eprintln!("fleet: unmounting {p}, left by an earlier run");
        let _ = Command::new("umount").arg(p).status();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_all_in(i);
        }
        // Processes take a moment to go; a namespace with one left still goes (it lives on
        // unnamed until that process ends), so wait for them first.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns_name]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
