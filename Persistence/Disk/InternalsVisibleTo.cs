using System.Runtime.CompilerServices;

// The disk tests check the portable CRC path and leg internals; the pipeline tests wrap legs.
[assembly: InternalsVisibleTo("Lockstep.Persistence.Tests")]
[assembly: InternalsVisibleTo("Lockstep.Actors.Tests")]
[assembly: InternalsVisibleTo("Lockstep.Actors")]
