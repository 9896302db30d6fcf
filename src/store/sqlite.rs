//! TEMPORARY stub; replaced by branch h-b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRecord {
    pub pid: i32,
    pub pgid: i32,
    pub start_ticks: u64,
    pub boot_id: String,
    pub group: String,
    pub tag: String,
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    SetGoal { group: String, level: String },
    SetDisabled { tag: String, disabled: bool },
    ForgetEntry { tag: String },
    AddChild(ChildRecord),
    RemoveChild { pid: i32 },
}
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub goals: Vec<(String, String)>,
    pub disabled: Vec<String>,
    pub children: Vec<ChildRecord>,
}
pub struct StateDb;
impl StateDb {
    pub fn open(_dir: &std::path::Path) -> Result<StateDb, super::StoreError> {
        Ok(StateDb)
    }
    pub fn path(&self) -> &std::path::Path {
        std::path::Path::new("")
    }
    pub fn load(&self) -> Result<Persisted, super::StoreError> {
        Ok(Persisted::default())
    }
    pub fn apply(&mut self, _ops: &[StoreOp]) -> Result<(), super::StoreError> {
        Ok(())
    }
}
