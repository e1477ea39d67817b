from sllmbo.cli import main

main()
