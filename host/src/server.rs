//! The server: opens the database, loads the components, starts the committer,
//! accepts connections until the shutdown future resolves, then drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::components::Components;
use crate::config::Config;
use crate::error::{Error, Report, Result};
use crate::http::admin::AdminToken;
use crate::http::conns::{self, ConnLimits, ConnSlot, Watched};
use crate::http::router::Router;
use crate::http::{Serves, Site};
use crate::metrics::Metrics;
use crate::objects::{AlarmDelivery, Runtime};
use crate::storage::Db;
use crate::storage::committer::{Committer, CommitterThread};

/// How long shutdown waits for connections and objects to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A configured host, ready to serve.
pub struct Server {
    rt: Arc<Runtime>,
    router: Arc<Router>,
    admin: Arc<AdminToken>,
    committer: CommitterThread,
}

impl Server {
    /// Opens the database, compiles and links every class, starts the committer.
    pub fn new(config: Config) -> Result<Server> {
        Server::build(config, true)
    }

    /// A host whose config's classes are not loaded: `roomhost check` loads
    /// and tries each itself. Its admin token is not looked up.
    pub(crate) fn without_classes(config: Config) -> Result<Server> {
        Server::build(config, false)
    }

    fn build(config: Config, load_classes: bool) -> Result<Server> {
        config.validate()?;
        let router = Router::new(&config.routes)?;
        let admin = Arc::new(if load_classes {
            AdminToken::resolve(&config)?
        } else {
            AdminToken::unusable()
        });
        let metrics = Arc::new(Metrics::default());
        let db = Db::open_with_cache(&config.data, Some(config.limits.storage_cache_bytes))?;
        let components = if load_classes {
            Components::load(&config, &db, metrics.clone())?
        } else {
            Components::empty(&config, &db, metrics.clone())?
        };
        if load_classes {
            for (path, class) in config.routes_without_class(|class| components.has_class(class)) {
                tracing::warn!(
                    route = %path,
                    %class,
                    "the route names a class that is neither configured nor deployed: it answers 404 until `roomhost deploy {class} FILE` creates it"
                );
            }
        }
        let (committer, thread) = Committer::start_with(
            db.clone(),
            config.durability,
            config.group_commit,
            metrics.clone(),
        )
        .map_err(|source| Error::Io {
            context: "cannot start the committer thread".into(),
            source,
        })?;
        let (alarms, scheduler) = crate::alarms::Scheduler::start();
        let rt = Runtime::new(config, components, db, committer, metrics, alarms);
        let delivery = Arc::new(AlarmDelivery(Arc::downgrade(&rt)));
        rt.tasks.spawn(scheduler.run(delivery, rt.shutdown.clone()));
        if crate::memory::glibc_trim_enabled() {
            rt.tasks.spawn(crate::memory::trim_task(
                rt.metrics.clone(),
                rt.shutdown.clone(),
            ));
        }
        let pending = crate::alarms::schedule_stored(&rt.db, &rt.alarms)?;
        if pending > 0 {
            tracing::info!("{pending} stored alarm(s) scheduled");
        }
        Ok(Server {
            rt,
            router: Arc::new(router),
            admin,
            committer: thread,
        })
    }

    /// The host's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.rt.metrics.clone()
    }

    /// A handle that deploys into this host while it serves (`roomhost
    /// dev`). It does not keep the host alive.
    pub fn deployer(&self) -> Deployer {
        Deployer(Arc::downgrade(&self.rt))
    }

    /// The shared state, for in-crate tools (`roomhost check`).
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// Stops a host that never served: its background tasks end, the
    /// committer with the last handle.
    pub(crate) fn close(self) {
        self.rt.shutdown.cancel();
        self.rt.warm.clear(&self.rt.metrics);
    }

    /// Serves connections from `listener` until `shutdown` resolves; then closes
    /// every socket (1001), waits for in-flight events and the last commit.
    ///
    /// A failed commit also ends it: redb accepts no writes after an I/O
    /// error until it is reopened, so the host closes every socket with 1011,
    /// drains, and returns the error (the binary exits non-zero for its
    /// supervisor to restart it; opening the file again repairs it).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let Server {
            rt,
            router,
            admin,
            committer,
        } = self;
        tokio::pin!(shutdown);
        let storage_failed = rt.committer.failed();
        tokio::pin!(storage_failed);
        let serves = match rt.config.admin_listen {
            Some(_) => Serves::Routes,
            None => Serves::Everything,
        };
        if let Some(addr) = rt.config.admin_listen {
            let admin_listener = listen(addr).map_err(|source| Error::Io {
                context: format!("cannot listen on {addr} (admin_listen)"),
                source,
            })?;
            let addr = admin_listener.local_addr().unwrap_or(addr);
            tracing::info!("admin API on http://{addr}/admin/");
            let site = Arc::new(Site {
                router: router.clone(),
                admin: admin.clone(),
                serves: Serves::Admin,
                // The operator's way in: not capped.
                limits: None,
            });
            let (rt2, stop) = (rt.clone(), rt.shutdown.clone());
            rt.tasks.spawn(async move {
                tokio::select! {
                    () = accept(admin_listener, rt2, site) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
        let limits = ConnLimits::new(
            rt.config.limits.max_connections,
            rt.config.limits.max_connections_per_ip,
            rt.metrics.clone(),
        );
        let site = Arc::new(Site {
            router,
            admin,
            serves,
            limits: Some(limits),
        });
        tokio::select! {
            () = accept(listener, rt.clone(), site) => {}
            () = &mut shutdown => {}
            () = &mut storage_failed => {}
        }
        match &rt.committer.failure() {
            Some(e) => tracing::error!(
                error = %Report(e),
                "storage failed: shutting down (sockets close with 1011); restart the host to reopen and repair the database"
            ),
            None => tracing::info!("shutting down: closing sockets and draining objects"),
        }
        rt.shutdown.cancel();
        rt.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, rt.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period passed with tasks still running");
        }
        // Warm instances hold the runtime (a cycle): drop them.
        rt.warm.clear(&rt.metrics);
        // Also a commit that failed while draining (its output was dropped).
        let failure = rt.committer.failure();
        // The committer stops when the last handle (inside the runtime) is gone.
        match Arc::try_unwrap(rt) {
            Ok(rt) => {
                drop(rt);
                let _ = tokio::task::spawn_blocking(move || committer.join()).await;
            }
            Err(_) => tracing::warn!(
                "runtime still referenced after shutdown; not waiting for the committer"
            ),
        }
        match failure {
            Some(e) => Err(Error::Storage(e)),
            None => Ok(()),
        }
    }
}

/// Deploys into a running host, in process: the path `roomhost deploy` takes
/// through the admin API (compile, link, a trial instance and its `init`,
/// then every object moves at its next event), without HTTP.
#[derive(Clone)]
pub struct Deployer(std::sync::Weak<Runtime>);

impl Deployer {
    /// Deploys `bytes` as `class`'s new version for every object; refused
    /// (and nothing changes) unless it compiles, links and starts.
    pub async fn deploy(
        &self,
        class: &str,
        bytes: Vec<u8>,
        deployed_by: &str,
    ) -> std::result::Result<crate::components::Change, crate::error::ComponentError> {
        let rt = self
            .0
            .upgrade()
            .ok_or(crate::error::ComponentError::HostStopped)?;
        rt.deploy(class, bytes, deployed_by, None).await
    }

    /// The version of `class` that serves every object now.
    pub fn active_version(&self, class: &str) -> Option<String> {
        let rt = self.0.upgrade()?;
        rt.components
            .records()
            .into_iter()
            .find(|(c, _)| c == class)
            .map(|(_, r)| r.active)
    }
}

/// Accepts connections on `listener` and serves each with `site`, until the
/// future is dropped. With `limits`, a connection over a cap is sent a 503
/// and closed at once, before anything of it is read.
async fn accept(listener: TcpListener, rt: Arc<Runtime>, site: Arc<Site>) {
    let limits = site.limits.clone();
    let head_timeout = Duration::from_millis(rt.config.limits.request_head_timeout_ms);
    // Behind a trusted proxy every connection comes from the proxy: the
    // per-IP cap then counts upgrades per forwarded IP (`http::to_object`).
    let cap_peer = !rt.config.trust_forwarded_for;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match &limits {
            Some(l) => match l.admit(cap_peer.then(|| conns::canonical(peer.ip()))) {
                Ok(slot) => slot,
                Err(why) => {
                    tracing::debug!(%peer, ?why, "connection refused: over a cap");
                    // Best effort and never waits: the socket's send buffer
                    // is empty. Then closed at once.
                    let _ = stream.try_write(conns::REFUSAL);
                    drop(stream);
                    continue;
                }
            },
            None => ConnSlot::unlimited(),
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(slot);
        let (rt2, site2) = (rt.clone(), site.clone());
        let service = service_fn(move |req| {
            crate::http::handle(rt2.clone(), site2.clone(), peer, slot.clone(), req)
        });
        let stop = rt.shutdown.clone();
        let metrics = rt.metrics.clone();
        rt.tasks.spawn(async move {
            let watched = Watched::new(stream);
            let read_since_write = watched.flag();
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(TokioIo::new(watched), service)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    if e.is_timeout() {
                        if read_since_write.load(std::sync::atomic::Ordering::Relaxed) {
                            metrics.slow_head_cut();
                        } else {
                            metrics.idle_connection_closed();
                        }
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The accept backlog: many clients connecting at once (a room filling up, every
/// client reconnecting after a restart) must not overflow the kernel's queue.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a deep accept backlog.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a host on `listener` with `config` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    Server::new(config)?.serve(listener, shutdown).await
}
