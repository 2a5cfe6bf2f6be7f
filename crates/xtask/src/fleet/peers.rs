//! The fleet's peers, real and in the harness's namespace: one Prometheus (native
//! histograms on) scraping every host's cfn-serve and node_exporter, one Alertmanager on the
//! bridge's address notifying a webhook receiver that records every notification.

use anyhow::{Context, bail};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// cfn-serve's and node_exporter's ports on every host.
pub const SERVE_PORT: u16 = 9464;
pub const NODE_PORT: u16 = 9100;

fn wait_ready(url: &str, child: &mut Child, what: &str, log: &Path) -> anyhow::Result<()> {
    let agent = crate::chaos::http_client(5);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if agent.get(url).call().is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("{what} did not start in 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
}

impl Prometheus {
    /// Scrapes `hosts` (name, address) every `every`: cfn-serve as job `cfn-serve`,
    /// node_exporter as job `node`, each target labelled with its host.
    pub fn start(dir: &Path, hosts: &[(String, Ipv4Addr)], every: &str) -> anyhow::Result<Self> {
        let targets = |port: u16| {
            hosts
                .iter()
                .map(|(name, ip)| {
                    format!("      - targets: ['{ip}:{port}']\n        labels: {{host: {name}}}\n")
                })
                .collect::<String>()
        };
        let config = format!(
            "global:\n  scrape_interval: {every}\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: cfn-serve\n    static_configs:\n{}  - job_name: node\n    static_configs:\n{}",
            targets(SERVE_PORT),
            targets(NODE_PORT)
        );
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let port = cfn_testkit::free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let mut child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=native-histograms")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("prometheus (Debian package prometheus)")?;
        wait_ready(
            &format!("http://127.0.0.1:{port}/-/ready"),
            &mut child,
            "prometheus",
            &log,
        )?;
        Ok(Prometheus { child, port })
    }

    /// An instant query at `at` (Unix seconds; now when `None`): each result's labels and value.
    pub fn query(&self, promql: &str, at: Option<f64>) -> anyhow::Result<Vec<(Value, f64)>> {
        let mut url = format!("http://127.0.0.1:{}/api/v1/query?query={}", self.port, {
            let mut enc = String::new();
            for b in promql.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    enc.push(b as char);
                } else {
                    enc.push_str(&format!("%{b:02X}"));
                }
            }
            enc
        });
        if let Some(t) = at {
            url.push_str(&format!("&time={t:.3}"));
        }
        let body = crate::chaos::http_client(60)
            .get(&url)
            .call()?
            .body_mut()
            .read_to_string()?;
        let v: Value = serde_json::from_str(&body)?;
        let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(results
            .into_iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect())
    }

    /// The one value of a query that yields one (NaN when it yields none).
    pub fn scalar(&self, promql: &str, at: Option<f64>) -> anyhow::Result<f64> {
        Ok(self
            .query(promql, at)?
            .first()
            .map_or(f64::NAN, |(_, v)| *v))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alertmanager on the bridge's address, grouping by alertname, killed and started again on
/// the same port and storage by the faults.
pub struct Alertmanager {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

impl Alertmanager {
    pub fn start(
        dir: &Path,
        receiver: &str,
        group_wait: Duration,
        group_interval: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("am.yml"),
            cfn_testkit::alertmanager::config(receiver, group_wait, group_interval, "4h"),
        )?;
        let mut am = Alertmanager {
            child: None,
            dir: dir.to_path_buf(),
            port: cfn_testkit::free_port(),
        };
        am.run()?;
        Ok(am)
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", super::net::bridge_ip(), self.port)
    }

    /// Starts it (again).
    pub fn run(&mut self) -> anyhow::Result<()> {
        let log = self.dir.join("alertmanager.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let listen = format!("{}:{}", super::net::bridge_ip(), self.port);
        let mut child = cfn_testkit::alertmanager::command(
            Path::new("prometheus-alertmanager"),
            &self.dir,
            &listen,
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("prometheus-alertmanager (Debian package prometheus-alertmanager)")?;
        wait_ready(
            &format!("{}/-/ready", self.url()),
            &mut child,
            "alertmanager",
            &log,
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: it saves nothing on the way out.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
    }
}
