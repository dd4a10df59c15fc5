//! Password hashing and checking: Argon2id with OWASP's parameters (19 MiB, two passes, one lane;
//! `argon2`'s defaults), on a few threads of its own.
//!
//! Every check needs 19 MiB of Argon2 memory. Run on the runtime's blocking pool, a flood of
//! sign-ins had each blocking thread allocate its own, which the allocator then kept per thread
//! after the flood, and the checks queued without end. Here [`WORKERS`] threads each own one
//! buffer of Argon2 blocks, allocated at their first job and reused for every job after: hashing
//! never holds more than `WORKERS` × 19 MiB, however many ask, and nothing is freed to be
//! stranded. Jobs wait in a [`FairQueue`], served one client (a remote address) at a time in
//! turn, a few jobs per client and a bounded number of clients: one address cannot queue
//! hundreds of checks ahead of everyone else, and a caller beyond the bound is told at once
//! ([`RegistryError::Busy`]) instead of waiting. A job whose caller has gone is skipped.
//!
//! An unknown user's check does the same work as a known user's (the password is hashed with
//! the same parameters and compared with nothing), inside the same bound, so the time taken does
//! not tell whether a username exists.
//!
//! It must never log a password, or compare hashes in variable time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;

use super::error::RegistryError;

/// Threads hashing at once, each with its own 19 MiB.
pub(super) const WORKERS: usize = 2;
/// Clients with jobs waiting at once; a further client is told to try again.
const MAX_CLIENTS: usize = 64;
/// Jobs one client may have waiting.
const PER_CLIENT: usize = 4;
const SALT_LEN: usize = 16;

/// The parameters of every new hash: m = 19,456 KiB, t = 2, p = 1, 32 bytes out.
fn params() -> Params {
    Params::DEFAULT
}

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Verify {
        /// The stored PHC string; `None` for an unknown user (equal work, never a match).
        phc: Option<String>,
        password: String,
        reply: oneshot::Sender<bool>,
    },
}

impl Job {
    fn abandoned(&self) -> bool {
        match self {
            Job::Hash { reply, .. } => reply.is_closed(),
            Job::Verify { reply, .. } => reply.is_closed(),
        }
    }
}

/// Jobs waiting, taken one client at a time in turn: a client with many waiting gets no more
/// turns than one with a single job.
pub(super) struct FairQueue<T> {
    waiting: HashMap<String, VecDeque<T>>,
    turns: VecDeque<String>,
    max_clients: usize,
    per_client: usize,
}

impl<T> FairQueue<T> {
    pub(super) fn new(max_clients: usize, per_client: usize) -> Self {
        FairQueue {
            waiting: HashMap::new(),
            turns: VecDeque::new(),
            max_clients,
            per_client,
        }
    }

    /// Queues `job` for `client`; gives it back when the client, or the queue, is full.
    pub(super) fn push(&mut self, client: &str, job: T) -> Result<(), T> {
        if let Some(jobs) = self.waiting.get_mut(client) {
            if jobs.len() >= self.per_client {
                return Err(job);
            }
            jobs.push_back(job);
            return Ok(());
        }
        if self.waiting.len() >= self.max_clients {
            return Err(job);
        }
        self.waiting
            .insert(client.to_owned(), VecDeque::from([job]));
        self.turns.push_back(client.to_owned());
        Ok(())
    }

    /// The next client's oldest job.
    pub(super) fn pop(&mut self) -> Option<T> {
        let client = self.turns.pop_front()?;
        let jobs = self.waiting.get_mut(&client)?;
        let job = jobs.pop_front();
        if jobs.is_empty() {
            self.waiting.remove(&client);
        } else {
            self.turns.push_back(client);
        }
        job
    }
}

struct Queue {
    jobs: FairQueue<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// Closes the queue when the last [`Hasher`] goes: the threads finish what waits, then stop.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0.queue.lock() {
            q.closed = true;
        }
        self.0.ready.notify_all();
    }
}

/// The hashing threads and their queue; cheap to clone.
#[derive(Clone)]
pub(crate) struct Hasher {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl Hasher {
    /// Starts the [`WORKERS`] threads (their memory is allocated at their first job).
    pub(crate) fn start() -> Result<Hasher, RegistryError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: FairQueue::new(MAX_CLIENTS, PER_CLIENT),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..WORKERS {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("vigil-argon2-{i}"))
                .spawn(move || work(&s))
                .map_err(|e| RegistryError::Db(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Hasher {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        })
    }

    fn submit(&self, client: &str, job: Job) -> Result<(), RegistryError> {
        let mut q = self
            .shared
            .queue
            .lock()
            .map_err(|_| RegistryError::Db("password queue lock poisoned".into()))?;
        q.jobs.push(client, job).map_err(|_| RegistryError::Busy)?;
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of a new password, hashed
    /// in `client`'s turn.
    pub(crate) async fn hash(&self, client: &str, password: &str) -> Result<String, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            client,
            Job::Hash {
                password: password.to_owned(),
                reply,
            },
        )?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|e| RegistryError::Db(format!("password hashing failed: {e}")))
    }

    /// Whether `password` matches the stored PHC string, checked in `client`'s turn. `None` (no
    /// such user) costs the same and never matches.
    pub(crate) async fn verify(
        &self,
        client: &str,
        phc: Option<String>,
        password: &str,
    ) -> Result<bool, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            client,
            Job::Verify {
                phc,
                password: password.to_owned(),
                reply,
            },
        )?;
        answer.await.map_err(|_| stopped())
    }
}

fn stopped() -> RegistryError {
    RegistryError::Db("the password hashing threads have stopped".into())
}

/// One hashing thread: takes jobs in turn until the queue is closed and empty.
fn work(shared: &Shared) {
    let mut memory = Vec::new();
    loop {
        let job = {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            loop {
                match q.jobs.pop() {
                    Some(job) if job.abandoned() => continue,
                    Some(job) => break job,
                    None if q.closed => return,
                    None => {
                        q = match shared.ready.wait(q) {
                            Ok(q) => q,
                            Err(_) => return,
                        }
                    }
                }
            }
        };
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hash_with(&password, &mut memory));
            }
            Job::Verify {
                phc,
                password,
                reply,
            } => {
                let _ = reply.send(verify_with(phc.as_deref(), &password, &mut memory));
            }
        }
    }
}

/// The first `count` blocks of a thread's memory, which is sized once for [`params`]; `None`
/// when a stored hash asks for more than that.
fn blocks(memory: &mut Vec<Block>, count: usize) -> Option<&mut [Block]> {
    let own = params().block_count();
    if count > own {
        return None;
    }
    if memory.len() < own {
        memory.resize(own, Block::new());
    }
    memory.get_mut(..count)
}

/// Hashes `password` with a new random salt into a PHC string, in `memory`.
pub(super) fn hash_with(password: &str, memory: &mut Vec<Block>) -> Result<String, String> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let params = params();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks = blocks(memory, params.block_count()).ok_or("no hashing memory")?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`, computed in `memory` and compared in
/// constant time. Without a `phc`, the same work is done with [`params`] and nothing matches.
pub(super) fn verify_with(phc: Option<&str>, password: &str, memory: &mut Vec<Block>) -> bool {
    let Some(phc) = phc else {
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        if let Some(blocks) = blocks(memory, params().block_count()) {
            let _ = Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
                .hash_password_into_with_memory(
                    password.as_bytes(),
                    &[0u8; SALT_LEN],
                    &mut out,
                    blocks,
                );
        }
        return false;
    };
    let Ok(stored) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(stored.algorithm.as_str()) else {
        return false;
    };
    let version = match stored.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&stored) else {
        return false;
    };
    let Some(blocks) = blocks(memory, params.block_count()) else {
        tracing::warn!(
            m_cost = params.m_cost(),
            "a stored password hash needs more memory than checks may use; it cannot be checked"
        );
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_both_ways_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let mut memory = Vec::new();
        let ours = hash_with("correct horse battery", &mut memory).unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        for phc in [&ours, &theirs] {
            assert!(verify_with(Some(phc), "correct horse battery", &mut memory));
            assert!(!verify_with(
                Some(phc),
                "correct horse batterz",
                &mut memory
            ));
        }
        assert_eq!(memory.len(), params().block_count(), "one buffer, reused");
        assert!(!verify_with(None, "correct horse battery", &mut memory));
        assert!(!verify_with(Some("not a hash"), "x", &mut memory));
    }

    #[test]
    fn a_stored_hash_asking_for_more_memory_is_refused_not_allocated() {
        let big = Params::new(64 * 1024, 1, 1, None).unwrap();
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&big).unwrap(),
            salt: Some(Salt::new(&[7u8; SALT_LEN]).unwrap()),
            hash: Some(Output::new(&[0u8; 32]).unwrap()),
        }
        .to_string();
        let mut memory = Vec::new();
        assert!(!verify_with(Some(&phc), "whatever", &mut memory));
        assert!(memory.len() <= params().block_count());
    }

    #[test]
    fn the_queue_serves_clients_in_turn_and_is_bounded() {
        let mut q = FairQueue::new(2, 3);
        for i in 0..3 {
            q.push("flood", ("flood", i)).unwrap();
        }
        assert!(q.push("flood", ("flood", 3)).is_err(), "three per client");
        q.push("nina", ("nina", 0)).unwrap();
        assert!(q.push("third", ("third", 0)).is_err(), "two clients");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [("flood", 0), ("nina", 0), ("flood", 1), ("flood", 2)],
            "nina waits for one of the flood's jobs, not all of them"
        );
        q.push("third", ("third", 0)).unwrap();
        assert_eq!(q.pop(), Some(("third", 0)));
        assert_eq!(q.pop(), None);
    }

    #[tokio::test]
    async fn checks_beyond_the_bound_are_refused_at_once() {
        let h = Hasher::start().unwrap();
        let phc = h.hash("admin", "correct horse battery").await.unwrap();
        assert!(
            h.verify("a", Some(phc.clone()), "correct horse battery")
                .await
                .unwrap()
        );
        assert!(!h.verify("a", None, "correct horse battery").await.unwrap());
        // Many at once from one client: the workers take some, PER_CLIENT wait, the rest are
        // refused without waiting.
        let tries: Vec<_> = (0..WORKERS + PER_CLIENT + 8)
            .map(|_| {
                let (h, phc) = (h.clone(), phc.clone());
                tokio::spawn(async move { h.verify("flood", Some(phc), "wrong").await })
            })
            .collect();
        let mut busy = 0;
        for t in tries {
            match t.await.unwrap() {
                Err(RegistryError::Busy) => busy += 1,
                other => assert!(matches!(other, Ok(false)), "{other:?}"),
            }
        }
        assert!(busy >= 8, "{busy} refused");
    }
}
