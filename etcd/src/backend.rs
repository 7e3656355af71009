//! [`shmlock::backend`]'s traits for the etcd backend.

use std::future::Future;
use std::time::Duration;

use shmlock::backend::{Backend, BackendReader, BackendWriter};

use crate::{Error, EtcdLock, EtcdReader, EtcdWriter};

impl Backend for EtcdLock {
    type Writer = EtcdWriter;
    type Reader = EtcdReader;
    type Error = Error;

    fn try_claim_writer(&self) -> impl Future<Output = Result<EtcdWriter, Error>> + Send {
        EtcdLock::try_claim_writer(self)
    }
    fn claim_writer(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<EtcdWriter, Error>> + Send {
        EtcdLock::claim_writer(self, timeout)
    }
    fn attach_reader(&self) -> impl Future<Output = Result<EtcdReader, Error>> + Send {
        EtcdLock::attach_reader(self)
    }
    fn published(&self) -> impl Future<Output = Result<u64, Error>> + Send {
        EtcdLock::published(self)
    }
    fn wait_published(
        &self,
        after: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<u64, Error>> + Send {
        EtcdLock::wait_published(self, after, timeout)
    }
    fn oldest_pinned(&self) -> impl Future<Output = Result<Option<u64>, Error>> + Send {
        EtcdLock::oldest_pinned(self)
    }
}

impl BackendWriter for EtcdWriter {
    type Error = Error;

    fn generation(&self) -> u64 {
        EtcdWriter::generation(self)
    }
    fn publish(&self, version: u64) -> impl Future<Output = Result<(), Error>> + Send {
        EtcdWriter::publish(self, version)
    }
    fn is_current(&self) -> impl Future<Output = Result<bool, Error>> + Send {
        EtcdWriter::is_current(self)
    }
    fn wait_readers_past(
        &self,
        version: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        EtcdWriter::wait_readers_past(self, version, timeout)
    }
    fn release(self) -> impl Future<Output = Result<(), Error>> + Send {
        EtcdWriter::release(self)
    }
}

impl BackendReader for EtcdReader {
    type Error = Error;

    fn version(&self) -> u64 {
        EtcdReader::version(self)
    }
    fn detach(self) -> impl Future<Output = Result<(), Error>> + Send {
        EtcdReader::detach(self)
    }
}
