# The `lockstep` image that docker-compose.yml runs. Multi-stage: the SDK builds, the ASP.NET runtime runs.
#   docker build -t lockstep .
#   docker run --rm lockstep --help
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# Restore first, from the project files alone, so a code change does not re-download packages.
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY Contracts/Lockstep.Contracts.csproj Contracts/
COPY Actors/Lockstep.Actors.csproj Actors/
COPY Persistence/Lockstep.Persistence.csproj Persistence/
COPY Hosting/Lockstep.Hosting.csproj Hosting/
RUN dotnet restore Hosting/Lockstep.Hosting.csproj
COPY Contracts/ Contracts/
COPY Actors/ Actors/
COPY Persistence/ Persistence/
COPY Hosting/ Hosting/
RUN dotnet publish Hosting/Lockstep.Hosting.csproj -c Release --no-restore -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0
# curl for the health check (GET /ready); nothing else is added to the runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app ./
# Management HTTP and NBD must listen beyond loopback inside a container; remoting binds --host.
ENV Lockstep__Http__Host=0.0.0.0 \
    Lockstep__Nbd__Host=0.0.0.0 \
    Lockstep__DataDirectory=/data
VOLUME ["/data", "/disks"]
EXPOSE 4053 8558 10809
ENTRYPOINT ["/app/lockstep"]
CMD ["serve", "--host", "0.0.0.0"]
