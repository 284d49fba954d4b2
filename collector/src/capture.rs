//! Loads the embedded eBPF object, configures its maps, attaches the XDP ingress and TC
//! egress programs to interfaces, reads the ring buffer, and detaches on exit.
//!
//! The object is embedded at build time (see `build.rs`), so the binary deploys alone. A
//! build without the eBPF toolchain embeds an empty stub; loading it fails with
//! [`CaptureError::StubObject`].
use std::collections::BTreeMap;

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{tc, ProgramInfo, SchedClassifier, TcAttachType, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use collector_common::{
    counters::COUNTER_COUNT,
    media::{EndpointKey, EndpointValue, MAP_MEDIA_EP, MAP_MEDIA_PORTS, MEDIA_PORT_WORDS},
    Config, Counter, EventHeader, MediaKey, MediaValue, GLOBAL_CONFIG, MAP_COUNTERS, MAP_EVENTS,
    MAP_MEDIA, MAP_SIP_PORTS, PORT_SIP, PROG_TC_EGRESS, PROG_XDP, SNAP_MAX,
};
use serde::Serialize;
use thiserror::Error;
use tokio::io::unix::AsyncFd;

/// The eBPF object built by `cargo xtask build` (empty when built without it).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf.o"));

/// Errors of loading, configuring and attaching the kernel programs.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The binary was built without the eBPF object.
    #[error("this binary embeds no eBPF object (built without `cargo xtask build`); rebuild it with `cargo xtask build`")]
    StubObject,
    /// The kernel refused the object.
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program is missing from the object.
    #[error("program `{0}` is missing from the eBPF object")]
    MissingProgram(&'static str),
    /// A map is missing from the object.
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A program operation failed.
    #[error("{what} failed")]
    Program {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("{what} failed")]
    Map {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// An I/O error (for example registering the ring buffer with the reactor).
    #[error("{what} failed")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> CaptureError {
    let what = what.into();
    move |e| CaptureError::Program {
        what,
        source: Box::new(e),
    }
}

fn map_err(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> CaptureError {
    let what = what.into();
    move |e| CaptureError::Map {
        what,
        source: Box::new(e),
    }
}

/// XDP attach mode as chosen on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode where the driver supports it, generic otherwise.
    Auto,
    /// Native mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// What to load and how to configure it.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// SIP ports (UDP and TCP).
    pub sip_ports: Vec<u16>,
    /// Snap length (1..=SNAP_MAX).
    pub snap_len: u32,
    /// One RTP header in N is sampled (0 = none).
    pub rtp_sample_every: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            sip_ports: vec![5060, 5080],
            snap_len: collector_common::SNAP_DEFAULT,
            rtp_sample_every: 0,
            ring_bytes: collector_common::RING_BYTES_DEFAULT,
        }
    }
}

/// One attachment, reported to the operator.
#[derive(Clone, Debug, Serialize)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// `xdp-native`, `xdp-generic` or `tc-egress`.
    pub hook: &'static str,
}

/// The loaded programs and their maps. Dropping it detaches every program.
pub struct Capture {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// What MEDIA_PORTS holds: only this process writes it (bits are set, never cleared),
    /// so a port already announced costs no system call.
    ports: Vec<u64>,
}

impl Capture {
    /// Loads the embedded object and configures its maps.
    pub fn load(opts: &CaptureOptions) -> Result<Self, CaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::StubObject);
        }
        if opts.snap_len == 0 || opts.snap_len as usize > SNAP_MAX {
            return Err(CaptureError::InvalidOption(format!(
                "snap length {} is outside 1..={SNAP_MAX}",
                opts.snap_len
            )));
        }
        if !opts.ring_bytes.is_power_of_two() || opts.ring_bytes < 4096 {
            return Err(CaptureError::InvalidOption(format!(
                "ring buffer size {} is not a power of two of at least 4096",
                opts.ring_bytes
            )));
        }
        let cfg = Config {
            snap_len: opts.snap_len,
            rtp_sample_every: opts.rtp_sample_every,
            ..Config::DEFAULT
        };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_EVENTS, opts.ring_bytes)
            .override_global(GLOBAL_CONFIG, &cfg, true)
            .load(EBPF_OBJECT)
            .map_err(|e| CaptureError::Load(Box::new(e)))?;
        {
            let map = ebpf
                .map_mut(MAP_SIP_PORTS)
                .ok_or(CaptureError::MissingMap(MAP_SIP_PORTS))?;
            let mut words: Array<_, u64> =
                Array::try_from(map).map_err(map_err("opening SIP_PORTS"))?;
            for &p in &opts.sip_ports {
                let idx = u32::from(p >> 5);
                let w = words.get(&idx, 0).map_err(map_err("reading SIP_PORTS"))?;
                let bit = u64::from(PORT_SIP) << ((p & 31) * 2);
                words
                    .set(idx, w | bit, 0)
                    .map_err(map_err(format!("adding SIP port {p}")))?;
            }
        }
        for name in [PROG_XDP, PROG_TC_EGRESS] {
            let prog = ebpf
                .program_mut(name)
                .ok_or(CaptureError::MissingProgram(name))?;
            match name {
                PROG_XDP => {
                    let p: &mut Xdp = prog.try_into().map_err(prog_err("typing sip_xdp"))?;
                    p.load().map_err(prog_err("loading sip_xdp"))?;
                }
                _ => {
                    let p: &mut SchedClassifier =
                        prog.try_into().map_err(prog_err("typing sip_tc_egress"))?;
                    p.load().map_err(prog_err("loading sip_tc_egress"))?;
                }
            }
        }
        Ok(Self {
            ebpf,
            attachments: Vec::new(),
            ports: vec![0; MEDIA_PORT_WORDS as usize],
        })
    }

    /// Attaches XDP (ingress) and TC (egress) to `iface`.
    pub fn attach(&mut self, iface: &str, mode: XdpModeArg) -> Result<(), CaptureError> {
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(PROG_XDP)
            .ok_or(CaptureError::MissingProgram(PROG_XDP))?
            .try_into()
            .map_err(prog_err("typing sip_xdp"))?;
        let hook = match mode {
            XdpModeArg::Native => {
                xdp.attach(iface, XdpMode::Driver)
                    .map_err(prog_err(format!("attaching XDP (native) to {iface}")))?;
                "xdp-native"
            }
            XdpModeArg::Generic => {
                xdp.attach(iface, XdpMode::Skb)
                    .map_err(prog_err(format!("attaching XDP (generic) to {iface}")))?;
                "xdp-generic"
            }
            XdpModeArg::Auto => match xdp.attach(iface, XdpMode::Driver) {
                Ok(_) => "xdp-native",
                Err(e) => {
                    tracing::info!(iface, error = %e, "native XDP unavailable, using generic mode");
                    xdp.attach(iface, XdpMode::Skb)
                        .map_err(prog_err(format!("attaching XDP (generic) to {iface}")))?;
                    "xdp-generic"
                }
            },
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            hook,
        });
        // The clsact qdisc may already exist (another tool, an earlier run): that is fine.
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            tracing::debug!(iface, error = %e, "clsact qdisc not added (it may exist already)");
        }
        let tcp: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_TC_EGRESS)
            .ok_or(CaptureError::MissingProgram(PROG_TC_EGRESS))?
            .try_into()
            .map_err(prog_err("typing sip_tc_egress"))?;
        tcp.attach(iface, TcAttachType::Egress)
            .map_err(prog_err(format!("attaching TC egress to {iface}")))?;
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            hook: "tc-egress",
        });
        Ok(())
    }

    /// What is attached where.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Run time (ns) and run count of each program, as the kernel accounts them while BPF
    /// statistics are enabled (`aya::sys::enable_stats`); zero otherwise.
    pub fn program_stats(&self) -> Result<Vec<(&'static str, u64, u64)>, CaptureError> {
        let mut out = Vec::new();
        for name in [PROG_XDP, PROG_TC_EGRESS] {
            let info = self.program_info(name)?;
            out.push((name, info.run_time().as_nanos() as u64, info.run_count()));
        }
        Ok(out)
    }

    /// The kernel's information on one loaded program (its id, sizes, statistics): the
    /// benchmark reads the verifier's output of the very programs it measures through it.
    pub fn program_info(&self, name: &'static str) -> Result<ProgramInfo, CaptureError> {
        let prog = self
            .ebpf
            .program(name)
            .ok_or(CaptureError::MissingProgram(name))?;
        prog.info()
            .map_err(prog_err(format!("reading {name} info")))
    }

    /// The kernel counters, summed over CPUs, by name.
    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>, CaptureError> {
        let map = self
            .ebpf
            .map(MAP_COUNTERS)
            .ok_or(CaptureError::MissingMap(MAP_COUNTERS))?;
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_err("opening COUNTERS"))?;
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            let per_cpu = arr
                .get(&(c as u32), 0)
                .map_err(map_err("reading COUNTERS"))?;
            out.insert(c.name(), per_cpu.iter().sum());
        }
        debug_assert_eq!(out.len(), COUNTER_COUNT as usize);
        Ok(out)
    }

    /// Takes the ring buffer out of the object, for a reader that polls it.
    pub fn take_ring_raw(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        let map = self
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or(CaptureError::MissingMap(MAP_EVENTS))?;
        RingBuf::try_from(map).map_err(map_err("opening EVENTS"))
    }

    /// Takes the ring buffer out of the object, wrapped for async readiness.
    pub fn take_ring(&mut self) -> Result<AsyncFd<RingBuf<MapData>>, CaptureError> {
        let ring = self.take_ring_raw()?;
        // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open while registered;
        // dropping the AsyncFd deregisters before the fd closes.
        unsafe { AsyncFd::register(ring) }.map_err(|e| CaptureError::Io {
            what: "registering the ring buffer",
            source: std::io::Error::from(e),
        })
    }

    /// The loaded object, for map access by other modules.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn media_map(
        &mut self,
    ) -> Result<BpfHashMap<&mut MapData, MediaKey, MediaValue>, CaptureError> {
        let map = self
            .ebpf
            .map_mut(MAP_MEDIA)
            .ok_or(CaptureError::MissingMap(MAP_MEDIA))?;
        BpfHashMap::try_from(map).map_err(map_err("opening MEDIA"))
    }

    fn endpoint_map(
        &mut self,
    ) -> Result<BpfHashMap<&mut MapData, EndpointKey, EndpointValue>, CaptureError> {
        let map = self
            .ebpf
            .map_mut(MAP_MEDIA_EP)
            .ok_or(CaptureError::MissingMap(MAP_MEDIA_EP))?;
        BpfHashMap::try_from(map).map_err(map_err("opening MEDIA_EP"))
    }

    /// Marks `port` as announced in SDP, so the programs look its packets up in MEDIA.
    /// Bits are never cleared: a stale bit costs one failed lookup, a missing one a stream.
    pub fn announce_port(&mut self, port: u16) -> Result<(), CaptureError> {
        let bit = 1u64 << (port & 63);
        let word = match self.ports.get(usize::from(port >> 6)) {
            Some(&w) if w & bit == 0 => w | bit,
            _ => return Ok(()),
        };
        let map = self
            .ebpf
            .map_mut(MAP_MEDIA_PORTS)
            .ok_or(CaptureError::MissingMap(MAP_MEDIA_PORTS))?;
        let mut words: Array<&mut MapData, u64> =
            Array::try_from(map).map_err(map_err("opening MEDIA_PORTS"))?;
        words
            .set(u32::from(port >> 6), word, 0)
            .map_err(map_err("writing MEDIA_PORTS"))?;
        if let Some(w) = self.ports.get_mut(usize::from(port >> 6)) {
            *w = word;
        }
        Ok(())
    }

    /// Installs (or replaces) one direction of a stream.
    pub fn insert_stream(&mut self, key: MediaKey, value: MediaValue) -> Result<(), CaptureError> {
        self.announce_port(key.sport)?;
        self.announce_port(key.dport)?;
        self.media_map()?
            .insert(key, value, 0)
            .map_err(map_err("inserting into MEDIA"))
    }

    /// Reads one direction's state; `None` when it is not installed (or was evicted).
    pub fn stream(&mut self, key: &MediaKey) -> Result<Option<MediaValue>, CaptureError> {
        match self.media_map()?.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("reading MEDIA")(e)),
        }
    }

    /// Removes one direction of a stream (absent is fine).
    pub fn remove_stream(&mut self, key: &MediaKey) -> Result<(), CaptureError> {
        match self.media_map()?.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("removing from MEDIA")(e)),
        }
    }

    /// Installs (or replaces) an endpoint announced in SDP.
    pub fn insert_endpoint(
        &mut self,
        key: EndpointKey,
        value: EndpointValue,
    ) -> Result<(), CaptureError> {
        self.announce_port(key.port)?;
        self.endpoint_map()?
            .insert(key, value, 0)
            .map_err(map_err("inserting into MEDIA_EP"))
    }

    /// Reads an endpoint; `None` when it is not installed (or was evicted).
    pub fn endpoint(&mut self, key: &EndpointKey) -> Result<Option<EndpointValue>, CaptureError> {
        match self.endpoint_map()?.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("reading MEDIA_EP")(e)),
        }
    }

    /// Removes an endpoint (absent is fine).
    pub fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<(), CaptureError> {
        match self.endpoint_map()?.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("removing from MEDIA_EP")(e)),
        }
    }
}

/// Entries per batch system call: a hash map's batch lookup needs room for a whole bucket,
/// and 1,024 entries of MEDIA are half a megabyte of values.
const BATCH: usize = 1024;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h), for
/// `BPF_MAP_{LOOKUP,UPDATE,DELETE}_BATCH`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// One batch command; `Ok(count)` or the error with how many elements were done before it.
fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> Result<usize, (usize, std::io::Error)> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of its own size; the pointers in it were
    // set by the callers to buffers of `count` elements of the map's key and value sizes
    // that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    let done = attr.count as usize;
    if r < 0 {
        Err((done, std::io::Error::last_os_error()))
    } else {
        Ok(done)
    }
}

/// The raw descriptor of the map `name` (a hash map of the object).
fn map_fd(ebpf: &Ebpf, name: &'static str) -> Result<u32, CaptureError> {
    use std::os::fd::{AsFd, AsRawFd};
    match ebpf.map(name) {
        Some(aya::maps::Map::HashMap(data)) => {
            Ok(u32::try_from(data.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX))
        }
        _ => Err(CaptureError::MissingMap(name)),
    }
}

/// Runs elements `0..len` through `batch` in ranges of at most [`BATCH`]. Where a batch
/// stops at an element (`Err(done)`: refused, or batches unsupported), that element goes
/// through `single`, which names its error, and the next batch starts after it. The
/// indexes of the elements `single` refused too, each with its error.
fn batched(
    len: usize,
    batch: &mut dyn FnMut(std::ops::Range<usize>) -> Result<(), usize>,
    single: &mut dyn FnMut(usize) -> Result<(), CaptureError>,
) -> Vec<(usize, CaptureError)> {
    let mut failed = Vec::new();
    let mut at = 0;
    while at < len {
        let end = (at + BATCH).min(len);
        match batch(at..end) {
            Ok(()) => at = end,
            Err(done) => {
                at += done;
                if at < len {
                    if let Err(e) = single(at) {
                        failed.push((at, e));
                    }
                }
                at += 1;
            }
        }
    }
    failed
}

/// Writes `keys[i]` → `values[i]` to the hash map `fd` ([`batched`]), straight from the
/// two slices (a batch takes keys and values as two arrays: no copy into new ones).
fn update_batched<K: aya::Pod, V: aya::Pod>(
    fd: u32,
    keys: &[K],
    values: &[V],
    single: &mut dyn FnMut(&K, &V) -> Result<(), CaptureError>,
) -> Vec<(usize, CaptureError)> {
    let len = keys.len().min(values.len());
    let mut batch = |r: std::ops::Range<usize>| {
        let (Some(k), Some(v)) = (keys.get(r.clone()), values.get(r)) else {
            return Err(0);
        };
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: u32::try_from(k.len()).unwrap_or(0),
            map_fd: fd,
            ..BatchAttr::default()
        };
        bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr)
            .map(drop)
            .map_err(|(done, _)| done)
    };
    batched(
        len,
        &mut batch,
        &mut |i| match (keys.get(i), values.get(i)) {
            (Some(k), Some(v)) => single(k, v),
            _ => Ok(()),
        },
    )
}

/// Deletes `keys` from the hash map `fd` ([`batched`]); `single` treats an absent key as
/// done.
fn delete_batched<K: aya::Pod>(
    fd: u32,
    keys: &[K],
    single: &mut dyn FnMut(&K) -> Result<(), CaptureError>,
) -> Vec<(usize, CaptureError)> {
    let mut batch = |r: std::ops::Range<usize>| {
        let Some(chunk) = keys.get(r) else {
            return Err(0);
        };
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: u32::try_from(chunk.len()).unwrap_or(0),
            map_fd: fd,
            ..BatchAttr::default()
        };
        bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr)
            .map(drop)
            .map_err(|(done, _)| done)
    };
    batched(keys.len(), &mut batch, &mut |i| match keys.get(i) {
        Some(k) => single(k),
        None => Ok(()),
    })
}

/// Notes the entries at the `failed` indexes as refused: each key with its value's cookie.
fn refuse<K: Copy, V>(
    keys: &[K],
    values: &[V],
    failed: Vec<(usize, CaptureError)>,
    cookie: fn(&V) -> u64,
    out: &mut Vec<(K, u64)>,
    first: &mut Option<CaptureError>,
) {
    for (i, e) in failed {
        if let (Some(k), Some(v)) = (keys.get(i), values.get(i)) {
            out.push((*k, cookie(v)));
        }
        first.get_or_insert(e);
    }
}

/// Stream and endpoint changes for [`Capture::apply`], applied as batches. Keys and values
/// are kept apart, as the batch system calls take them: a flush of a thousand 552-byte
/// stream values is then one copy out of the agent's queue, not three.
#[derive(Default)]
pub struct MediaChanges {
    /// Streams to install or replace: their keys ...
    stream_keys: Vec<MediaKey>,
    /// ... and at the same index their values.
    stream_values: Vec<MediaValue>,
    /// Streams to remove.
    pub streams_gone: Vec<MediaKey>,
    /// Endpoints to install or replace: their keys ...
    endpoint_keys: Vec<EndpointKey>,
    /// ... and at the same index their values.
    endpoint_values: Vec<EndpointValue>,
    /// Endpoints to remove.
    pub endpoints_gone: Vec<EndpointKey>,
}

impl MediaChanges {
    /// A stream to install or replace.
    pub fn push_stream(&mut self, key: MediaKey, value: MediaValue) {
        self.stream_keys.push(key);
        self.stream_values.push(value);
    }

    /// An endpoint to install or replace.
    pub fn push_endpoint(&mut self, key: EndpointKey, value: EndpointValue) {
        self.endpoint_keys.push(key);
        self.endpoint_values.push(value);
    }

    /// Empties every list, keeping their allocations.
    pub fn clear(&mut self) {
        self.stream_keys.clear();
        self.stream_values.clear();
        self.streams_gone.clear();
        self.endpoint_keys.clear();
        self.endpoint_values.clear();
        self.endpoints_gone.clear();
    }

    /// Empties every list, keeping room for at most `n` entries in each.
    pub fn clear_to(&mut self, n: usize) {
        self.clear();
        self.stream_keys.shrink_to(n);
        self.stream_values.shrink_to(n);
        self.streams_gone.shrink_to(n);
        self.endpoint_keys.shrink_to(n);
        self.endpoint_values.shrink_to(n);
        self.endpoints_gone.shrink_to(n);
    }
}

/// What [`Capture::apply`] could not write (a full map): each entry with its cookie.
#[derive(Debug, Default)]
pub struct Refused {
    /// Streams not installed.
    pub streams: Vec<(MediaKey, u64)>,
    /// Endpoints not installed.
    pub endpoints: Vec<(EndpointKey, u64)>,
    /// The first error, for the log.
    pub first: Option<CaptureError>,
}

impl Capture {
    /// Applies `changes` with a few batch system calls instead of one per entry: removals
    /// first (freeing room), then streams before the endpoints that point at them.
    pub fn apply(&mut self, changes: &MediaChanges) -> Refused {
        let mut refused = Refused::default();
        let (media, ep) = match (
            map_fd(&self.ebpf, MAP_MEDIA),
            map_fd(&self.ebpf, MAP_MEDIA_EP),
        ) {
            (Ok(m), Ok(e)) => (m, e),
            (Err(e), _) | (_, Err(e)) => {
                let streams = changes.stream_keys.iter().zip(&changes.stream_values);
                refused.streams = streams.map(|(k, v)| (*k, v.cookie)).collect();
                let endpoints = changes.endpoint_keys.iter().zip(&changes.endpoint_values);
                refused.endpoints = endpoints.map(|(k, v)| (*k, v.cookie)).collect();
                refused.first = Some(e);
                return refused;
            }
        };
        let gone = delete_batched(media, &changes.streams_gone, &mut |k| self.remove_stream(k));
        let gone_ep = delete_batched(ep, &changes.endpoints_gone, &mut |k| {
            self.remove_endpoint(k)
        });
        for (_, e) in gone.into_iter().chain(gone_ep) {
            refused.first.get_or_insert(e);
        }
        let ports = changes.stream_keys.iter().flat_map(|k| [k.sport, k.dport]);
        for port in ports.chain(changes.endpoint_keys.iter().map(|k| k.port)) {
            if let Err(e) = self.announce_port(port) {
                refused.first.get_or_insert(e);
            }
        }
        let (keys, values) = (&changes.stream_keys, &changes.stream_values);
        let failed = update_batched(media, keys, values, &mut |k, v| {
            self.media_map()?
                .insert(k, v, 0)
                .map_err(map_err("inserting into MEDIA"))
        });
        let first = &mut refused.first;
        refuse(
            keys,
            values,
            failed,
            |v| v.cookie,
            &mut refused.streams,
            first,
        );
        let (keys, values) = (&changes.endpoint_keys, &changes.endpoint_values);
        let failed = update_batched(ep, keys, values, &mut |k, v| {
            self.endpoint_map()?
                .insert(k, v, 0)
                .map_err(map_err("inserting into MEDIA_EP"))
        });
        let first = &mut refused.first;
        refuse(
            keys,
            values,
            failed,
            |v| v.cookie,
            &mut refused.endpoints,
            first,
        );
        refused
    }

    /// Reads every MEDIA entry into `out` (cleared first) with batch lookups: one system
    /// call per [`BATCH`] entries instead of one per entry. Entries change while the walk
    /// goes on; each one is read whole.
    pub fn read_streams(
        &mut self,
        out: &mut Vec<(MediaKey, MediaValue)>,
    ) -> Result<(), CaptureError> {
        out.clear();
        let fd = map_fd(&self.ebpf, MAP_MEDIA)?;
        let mut keys = vec![MediaKey::default(); BATCH];
        let mut values = vec![MediaValue::default(); BATCH];
        let (mut token, mut first) = (0u32, true);
        loop {
            let mut next = 0u32;
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    std::ptr::from_ref(&token) as u64
                },
                out_batch: std::ptr::from_mut(&mut next) as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: u32::try_from(BATCH).unwrap_or(0),
                map_fd: fd,
                ..BatchAttr::default()
            };
            let (n, done) = match bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) {
                Ok(n) => (n, false),
                Err((n, e)) if e.raw_os_error() == Some(libc::ENOENT) => (n, true),
                Err((_, e)) => {
                    return Err(CaptureError::Io {
                        what: "reading MEDIA in batches",
                        source: e,
                    })
                }
            };
            out.extend(keys.iter().copied().zip(values.iter().copied()).take(n));
            if done {
                return Ok(());
            }
            token = next;
            first = false;
        }
    }
}

/// An address as the maps store it: IPv4 mapped into IPv6, network byte order.
pub fn map_addr(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// One event read from the ring buffer.
#[derive(Clone, Debug)]
pub struct RawEvent {
    /// The header.
    pub header: EventHeader,
    /// The packet bytes (`cap_len` of them).
    pub data: Vec<u8>,
}

/// Decodes one ring record; `None` for a record too short or of an unknown version.
pub fn decode_event(rec: &[u8]) -> Option<RawEvent> {
    let (header, data) = split_event(rec)?;
    Some(RawEvent {
        header,
        data: data.to_vec(),
    })
}

/// One ring record's header and packet bytes, read in place; `None` as for
/// [`decode_event`].
pub fn split_event(rec: &[u8]) -> Option<(EventHeader, &[u8])> {
    let header = EventHeader::read(rec)?;
    if header.version != collector_common::EVENT_VERSION {
        return None;
    }
    let data = rec.get(EventHeader::LEN..EventHeader::LEN + header.cap_len as usize)?;
    Some((header, data))
}

/// Drains every record in the ring into `out`, each copied.
pub fn drain_ring(ring: &mut RingBuf<MapData>, out: &mut Vec<RawEvent>, bad: &mut u64) {
    drain_ring_with(ring, bad, |header, data| {
        out.push(RawEvent {
            header: *header,
            data: data.to_vec(),
        });
    });
}

/// Drains every record in the ring, handing each to `f` where it lies in the ring (no copy,
/// no allocation; the record is released when `f` returns). Returns how many were handed.
pub fn drain_ring_with(
    ring: &mut RingBuf<MapData>,
    bad: &mut u64,
    mut f: impl FnMut(&EventHeader, &[u8]),
) -> u64 {
    let mut n = 0u64;
    while let Some(rec) = ring.next() {
        match split_event(&rec) {
            Some((header, data)) => {
                n += 1;
                f(&header, data);
            }
            None => *bad += 1,
        }
    }
    n
}

/// `collector check`: load the object and list what it holds, without attaching.
pub fn self_check() -> anyhow::Result<()> {
    let cap = Capture::load(&CaptureOptions::default())?;
    let progs: Vec<_> = cap.ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    let maps: Vec<_> = cap.ebpf.maps().map(|(n, _)| n.to_owned()).collect();
    println!(
        "{}",
        serde_json::json!({ "object_bytes": EBPF_OBJECT.len(), "programs": progs, "maps": maps })
    );
    Ok(())
}

fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// `CLOCK_MONOTONIC` now, ns: the clock of `bpf_ktime_get_ns`, which stamps ring events
/// and RTP arrivals.
pub fn monotonic_ns() -> Option<u64> {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// What to add to a `CLOCK_MONOTONIC` time to get Unix time (ns), measured once: the
/// agent converts kernel timestamps with it, so a later wall-clock step does not reorder
/// events.
pub fn monotonic_to_unix_offset_ns() -> Option<u64> {
    let real = clock_ns(libc::CLOCK_REALTIME)?;
    let mono = clock_ns(libc::CLOCK_MONOTONIC)?;
    real.checked_sub(mono)
}
