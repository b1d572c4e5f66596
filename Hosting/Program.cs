using Lockstep.Hosting.Cli;

return await LockstepCli.RunAsync(args);
